import { runKubectl, type CommandResult, type ConsulAgentInfo, type ControlPlaneInfo } from '../env/index.js';

export const ENV_VARIABLE = 'AIMESH_TESTENV';

export interface SharedEnvironment {
  controlPlane: ControlPlaneInfo;
  consul: ConsulAgentInfo;
}

/** The control plane and Consul agent started by the e2e global setup. */
export function sharedEnvironment(): SharedEnvironment {
  const raw = process.env[ENV_VARIABLE];
  if (!raw)
    throw new Error(
      `${ENV_VARIABLE} is not set: run e2e tests through jest (global setup starts the environment)`,
    );
  return JSON.parse(raw) as SharedEnvironment;
}

export function kubectl(args: string[], input?: string): Promise<CommandResult> {
  return runKubectl(sharedEnvironment().controlPlane.kubeconfig, args, input);
}
