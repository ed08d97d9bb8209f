import { startConsul, startControlPlane } from '../env/index.js';
import { ENV_VARIABLE, type SharedEnvironment } from './shared.js';

/** Starts the shared control plane and Consul agent; workers find them via an env variable. */
export default async function setup(): Promise<void> {
  const started = Date.now();
  const [controlPlane, consul] = await Promise.all([startControlPlane(), startConsul()]);
  (globalThis as { aimeshTestEnv?: unknown }).aimeshTestEnv = { controlPlane, consul };
  const shared: SharedEnvironment = {
    controlPlane: {
      server: controlPlane.server,
      kubeconfig: controlPlane.kubeconfig,
      token: controlPlane.token,
      caFile: controlPlane.caFile,
      dir: controlPlane.dir,
      pids: controlPlane.pids,
    },
    consul: { address: consul.address, httpPort: consul.httpPort, pid: consul.pid },
  };
  process.env[ENV_VARIABLE] = JSON.stringify(shared);
  console.log(`\n[testenv] control plane and Consul up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
