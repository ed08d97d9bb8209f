/**
 * Container images without a container runtime and without a remote registry: each layer is
 * a tarball of a folder; crane stacks the layers on an empty OCI base in a registry it serves
 * on loopback for the few seconds of the build, sets the image config and saves an image
 * tarball that `ctr images import` and `docker load` read.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireBinary } from '../test/env/binaries.js';
import { freePort } from '../test/env/ports.js';
import { runCommand, startProcess, waitFor } from '../test/env/processes.js';

export interface ImageSpec {
  /** Full reference the tarball is tagged with, e.g. ghcr.io/aimesh/aimesh:0.1.0. */
  name: string;
  /** Root folders, one layer each, lowest first. */
  layers: string[];
  entrypoint: string[];
  env?: Record<string, string>;
  /** uid:gid; numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd. */
  user?: string;
  workdir?: string;
}

/** Writes the image as a tarball at `out`. */
export async function writeImageTarball(spec: ImageSpec, out: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'aimesh-image-'));
  const port = await freePort();
  const registry = startProcess(
    'crane-registry',
    requireBinary('crane'),
    ['registry', 'serve', `--address=127.0.0.1:${port}`],
    join(work, 'logs'),
  );
  try {
    await waitFor('crane registry', async () => (await fetch(`http://127.0.0.1:${port}/v2/`)).ok, 15_000);
    const layers = spec.layers.map((folder, i) => tarFolder(folder, join(work, `layer-${i}.tar`)));
    const staged = `127.0.0.1:${port}/build:latest`;
    await runCrane(['append', '--oci-empty-base', ...layers.flatMap((l) => ['-f', l]), '-t', staged]);
    await runCrane([
      'mutate',
      staged,
      `--entrypoint=${spec.entrypoint.join(',')}`,
      ...Object.entries(spec.env ?? {}).flatMap(([key, value]) => ['-e', `${key}=${value}`]),
      ...(spec.user ? ['--user', spec.user] : []),
      ...(spec.workdir ? ['--workdir', spec.workdir] : []),
      // The empty base has no platform; containerd imports only images for its own one.
      `--set-platform=linux/${goArch()}`,
      '-t',
      spec.name,
      '-o',
      out,
    ]);
  } finally {
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }

  async function runCrane(args: string[]): Promise<void> {
    const result = await runCommand(requireBinary('crane'), ['--insecure', ...args]);
    if (result.code !== 0) throw new Error(`crane ${args[0]} failed: ${result.stderr.trim()}`);
  }
}

/** The architecture as Go and OCI spell it. */
export function goArch(): string {
  const arches: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x' };
  const arch = arches[process.arch];
  if (!arch) throw new Error(`no image platform for CPU architecture ${process.arch}`);
  return arch;
}

/**
 * A layer tarball owned by root with fixed timestamps and sorted entries, so the same
 * folder always gives the same layer digest.
 */
function tarFolder(folder: string, out: string): string {
  const result = spawnSync(
    'tar',
    [
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '--format=gnu',
      '-C',
      folder,
      '-cf',
      out,
      '.',
    ],
    { encoding: 'utf8' },
  );
  if (result.status !== 0) throw new Error(`tar of ${folder} failed: ${result.stderr || result.error}`);
  return out;
}
