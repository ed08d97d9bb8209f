export {
  startControlPlane,
  attachControlPlane,
  runKubectl,
  serviceAccountKubeconfig,
  type ControlPlane,
  type ControlPlaneInfo,
  type CommandResult,
} from './control-plane.js';
export { startConsul, type ConsulAgent, type ConsulAgentInfo } from './consul.js';
export { resolveBinary, requireBinary, type BinaryName } from './binaries.js';
export { freePort, freePorts } from './ports.js';
export { startProcess, waitFor, type ManagedProcess } from './processes.js';
export { runHelm, kubeVersionFlag } from './helm.js';
