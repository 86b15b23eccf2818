// A umati machine tool on node-opcua (an OPC UA stack nobody here wrote), built from the same
// OPC Foundation NodeSets the simulator vendors, the way node-opcua instantiates types (machines
// organized by Objects/Machines, its own numbering). No alert is added: node-opcua leaves the
// optional Notification/Messages out, as a real server may.
// Usage: node umati_server.js <nodeset dir> <port> <pki dir>
// Prints one JSON line {"ready": true, "values": {...}} (canonical values) once it serves.
const path = require("path");
const {
  OPCUAServer, OPCUACertificateManager, nodesets, Variant, DataType, coerceLocalizedText,
} = require("node-opcua");

const [dir, portText, pki] = process.argv.slice(2);
const FILES = [
  "Opc.Ua.Di.NodeSet2.xml",
  "Opc.Ua.IA.NodeSet2.xml",
  "Opc.Ua.Machinery.NodeSet2.xml",
  "opc.ua.isa95-jobcontrol.nodeset2.xml",
  "Opc.Ua.Machinery.Jobs.Nodeset2.xml",
  "Opc.Ua.MachineTool.NodeSet2.xml",
];

function set(node, dataType, value) {
  const v = dataType === DataType.LocalizedText ? coerceLocalizedText(value) : value;
  node.setValueFromSource(new Variant({ dataType, value: v }));
}

async function main() {
  const server = new OPCUAServer({
    port: parseInt(portText, 10),
    nodeset_filename: [nodesets.standard, ...FILES.map((f) => path.join(dir, f))],
    serverCertificateManager: new OPCUACertificateManager({ rootFolder: pki }),
  });
  await server.initialize();
  const space = server.engine.addressSpace;
  const own = space.getOwnNamespace();
  const mt = space.getNamespaceIndex("http://opcfoundation.org/UA/MachineTool/");
  const machinery = space.getNamespaceIndex("http://opcfoundation.org/UA/Machinery/");
  const machines = space.rootFolder.objects.getFolderElementByName("Machines", machinery);
  const machine = space.findObjectType("MachineToolType", mt).instantiate({
    browseName: "NODE-VMC",
    organizedBy: machines,
    optionals: [
      "Monitoring.MachineTool.MachineryItemState",
      "Monitoring.MachineTool.MachineryOperationMode",
      "Production.ActiveProgram.JobIdentifier",
      "Production.Statistics",
      "Production.Statistics.PartsProducedInLifetime",
    ],
  });
  const child = (node, ...names) => names.reduce((n, [name, ns]) => n.getChildByName(name, ns), node);
  const monitoring = child(machine, ["Monitoring", mt]);
  const channel = space.findObjectType("ChannelMonitoringType", mt).instantiate({
    browseName: "Channel1", componentOf: monitoring,
  });
  const spindle = space.findObjectType("SpindleMonitoringType", mt).instantiate({
    browseName: "Spindle", componentOf: monitoring, optionals: ["Override"],
  });
  const speed = own.addVariable({ componentOf: spindle, browseName: "ActualSpeed", dataType: "Double" });
  const load = own.addVariable({ componentOf: spindle, browseName: "Load", dataType: "Double" });
  const tool = [["MachineTool", mt]];
  const values = {
    machine_state: "running",
    operation_mode: "Processing",
    program_name: "O4711 RING-OP10",
    job_id: "JOB-2026-0815",
    part_count: 4242,
    feed_override: 95.0,
    spindle_override: 110.0,
    spindle_speed: 2345.5,
    spindle_load: 37.5,
  };
  set(child(monitoring, ...tool, ["MachineryItemState", machinery], ["CurrentState", 0]), DataType.LocalizedText, "Executing");
  set(child(monitoring, ...tool, ["MachineryOperationMode", machinery], ["CurrentState", 0]), DataType.LocalizedText, "Processing");
  const program = child(machine, ["Production", mt], ["ActiveProgram", mt]);
  set(child(program, ["Name", mt]), DataType.String, values.program_name);
  set(child(program, ["JobIdentifier", mt]), DataType.String, values.job_id);
  set(child(machine, ["Production", mt], ["Statistics", mt], ["PartsProducedInLifetime", mt]), DataType.UInt32, values.part_count);
  set(child(channel, ["FeedOverride", mt]), DataType.Double, values.feed_override);
  set(child(spindle, ["Override", mt]), DataType.Double, values.spindle_override);
  set(speed, DataType.Double, values.spindle_speed);
  set(load, DataType.Double, values.spindle_load);
  await server.start();
  process.stdout.write(JSON.stringify({ ready: true, values }) + "\n");
  process.on("SIGTERM", async () => { await server.shutdown(100); process.exit(0); });
}

main().catch((err) => { process.stderr.write(String(err && err.stack || err) + "\n"); process.exit(1); });
