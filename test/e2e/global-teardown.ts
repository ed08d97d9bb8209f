import type { ConsulAgent, ControlPlane } from '../env/index.js';

export default async function teardown(): Promise<void> {
  const env = (globalThis as { aimeshTestEnv?: { controlPlane: ControlPlane; consul: ConsulAgent } })
    .aimeshTestEnv;
  await Promise.all([env?.controlPlane.stop(), env?.consul.stop()]);
}
