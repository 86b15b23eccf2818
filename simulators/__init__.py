"""Simulated line equipment behind real OPC UA and Modbus servers, with recorded ground truth."""
