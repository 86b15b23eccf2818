"""The shipped device-profile library (YAML data, packaged so an installed gateway has it too)."""
