/**
 * `npm run cluster`: the one-node cluster for a person. Builds the aimesh image, brings the
 * node up with the image imported, prints how to use it, and stays up until Ctrl-C, then
 * tears everything down. docs/cluster.md walks through it.
 *
 * `npm run cluster -- --suoke-life` also installs the operator with Helm and runs the
 * suoke-life example in pods (fitted to one node, with the test app standing in for its
 * services), as the node tests do.
 */
import { join } from 'node:path';
import { buildAimeshImage } from '../../image/build.js';
import { SUOKE, applyInWaves, suokeLifeForOneNode } from '../node/helpers.js';
import { requireBinary } from './binaries.js';
import { installOperatorChart } from './helm.js';
import { testAppImage } from './images.js';
import { NODE, nodeUnavailableReason, startCluster, type Cluster } from './node.js';

const log = (message: string) => console.log(`[cluster] ${message}`);

async function main(): Promise<void> {
  const reason = nodeUnavailableReason();
  if (reason) {
    log(`cannot start: ${reason}`);
    process.exitCode = 1;
    return;
  }
  const began = Date.now();
  const image = await buildAimeshImage();
  log(`${image.name}: ${(image.bytes / 1e6).toFixed(1)} MB${image.cached ? ' (cached)' : ''}`);
  const cluster = await startCluster(log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: tearing down...`);
    try {
      await cluster.stop();
      log('torn down; the machine is as it was');
    } catch (error) {
      log(String(error));
      process.exitCode = 1;
    }
    process.exit();
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  try {
    await cluster.importImage(image.tarball, image.name);
    if (process.argv.includes('--suoke-life')) await runSuokeLife(cluster);
  } catch (error) {
    log(String(error));
    await stop('setup failed');
    return;
  }
  const ctr = `${requireBinary('ctr')} --address ${join(cluster.dir, 'containerd.sock')} -n k8s.io`;
  console.log(`
The one-node cluster is up (${((Date.now() - began) / 1000).toFixed(1)} s; control plane ${(
    cluster.timings.controlPlane / 1000
  ).toFixed(1)} s, node ${(cluster.timings.node / 1000).toFixed(1)} s).

  export KUBECONFIG=${cluster.kubeconfig}
  export PATH=${join(requireBinary('kubectl'), '..')}:${join(requireBinary('helm'), '..')}:$PATH
  kubectl get nodes -o wide

Node ${NODE.name} at ${NODE.ip}; Consul for pods at ${NODE.ip}:8500 (UI/API from this machine too).
${image.name} is loaded. Load another image tarball (docker save, crane, npm run image):

  ${ctr} images import <image.tar>

Pods pull nothing: use imagePullPolicy: Never or IfNotPresent. Logs: ${join(cluster.dir, 'logs')}
Ctrl-C tears the cluster down.
`);
  await new Promise(() => {});
}

async function runSuokeLife(cluster: Cluster): Promise<void> {
  const example = suokeLifeForOneNode();
  const app = await testAppImage(example.ports);
  await cluster.importImage(app.tarball, app.name, example.images);
  log('helm install of the operator...');
  const installed = await installOperatorChart(cluster.kubeconfig);
  if (installed.code !== 0) throw new Error(`helm install: ${installed.stderr}`);
  log(`applying ${SUOKE} a few services at a time...`);
  await cluster.kubectl(['create', 'namespace', SUOKE]);
  const pods = await applyInWaves(cluster, example.resources);
  log(`${SUOKE}: ${pods.length} pods Ready`);
}

main().catch((error: unknown) => {
  log(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
