/**
 * The images the test node runs, built offline like the aimesh image (image/): the pause
 * image of every pod sandbox, and one small Node app (apps/app.ts) that stands in for every
 * service of an example. All are cached under ~/.cache/aimesh/images/ by a digest of their
 * inputs.
 */
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imageCacheDir, pruneOlderBuilds } from '../../image/build.js';
import { writeImageTarball, type ImageSpec } from '../../image/oci.js';
import { NONROOT, nodeBinary, stageNodeRuntime } from '../../image/runtime.js';
import { requireBinary } from './binaries.js';
import { ENV_DIR } from './components.js';

export interface ImageTarball {
  name: string;
  tarball: string;
}

/** The pause image; containerd pins it as the sandbox image, so it is never pulled. */
export async function pauseImage(): Promise<ImageTarball> {
  const pause = requireBinary('pause');
  const digest = createHash('sha256').update(readFileSync(pause)).digest('hex').slice(0, 12);
  return cachedImage('aimesh.test/pause', digest, (root) => {
    copyFileSync(pause, join(root, 'pause'));
    return { entrypoint: ['/pause'], user: '65535:65535' };
  });
}

/**
 * The test app, listening on every port in `ports` (and HTTP on 8080). Tag it with each image name an example
 * uses (`ctr images tag`), so the example's resources run unchanged apart from the app.
 */
export async function testAppImage(ports: number[]): Promise<ImageTarball> {
  const app = join(ENV_DIR, 'apps', 'app.ts');
  // 8080 answers in every pod, for tests that call into a pod from the host.
  const appPorts = [...new Set([8080, ...ports])].sort((a, b) => a - b).join(',');
  const digest = createHash('sha256')
    .update(readFileSync(app))
    .update(appPorts)
    .update(readFileSync(nodeBinary()))
    .update(readFileSync(new URL('../../image/runtime.ts', import.meta.url)))
    .digest('hex')
    .slice(0, 12);
  return cachedImage('aimesh.test/app', digest, (root) => {
    stageNodeRuntime(root);
    mkdirSync(join(root, 'app'));
    copyFileSync(app, join(root, 'app', 'app.ts'));
    return {
      entrypoint: ['/usr/local/bin/node', '/app/app.ts'],
      env: { APP_PORTS: appPorts, PATH: '/usr/local/bin:/usr/bin:/bin', NODE_NO_WARNINGS: '1' },
      user: `${NONROOT}:${NONROOT}`,
      workdir: '/app',
    };
  });
}

async function cachedImage(
  repository: string,
  digest: string,
  stage: (root: string) => Omit<ImageSpec, 'name' | 'layers'>,
): Promise<ImageTarball> {
  const name = `${repository}:${digest}`;
  const tarball = join(imageCacheDir(), `${repository.replace(/[/:]/g, '_')}-${digest}.tar`);
  if (existsSync(tarball) && statSync(tarball).size > 0) return { name, tarball };
  const work = mkdtempSync(join(tmpdir(), 'aimesh-image-'));
  try {
    const root = join(work, 'root');
    mkdirSync(root);
    const config = stage(root);
    mkdirSync(imageCacheDir(), { recursive: true });
    await writeImageTarball({ name, layers: [root], ...config }, `${tarball}.partial`);
    renameSync(`${tarball}.partial`, tarball);
    pruneOlderBuilds(tarball);
    return { name, tarball };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
