/**
 * `npm run image`: the aimesh image (operator, sidecar and CLI in one), built from this
 * repository with no container runtime and no registry, into an image tarball cached under
 * ~/.cache/aimesh/images/ keyed by a digest of everything that goes into it.
 *
 * `npm run image -- --rootfs <dir>` writes the same files into one folder instead; the
 * Dockerfile copies that folder onto an empty image, so both ways give the same image.
 *
 * Layers, lowest first: the Node runtime (binary and shared libraries), the production
 * node_modules, and the application bundled by esbuild into /app/aimesh (image/bundle.ts:
 * minified ES modules of only the code the commands reach; node_modules stays for what is
 * loaded by name at run time, the Kubernetes client and the YAML parser).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_DIR } from '../test/env/components.js';
import { BUNDLE_ENTRY, bundleApp } from './bundle.js';
import { goArch, writeImageTarball } from './oci.js';
import { NONROOT, nodeBinary, sharedLibraries, stageNodeRuntime } from './runtime.js';

export const IMAGE_REPOSITORY = 'ghcr.io/aimesh/aimesh';
/** What the image's entrypoint runs: the CLI's bundle. */
const IMAGE_ENTRY = `/app/aimesh/${BUNDLE_ENTRY}`;
const IMAGE_DIR = fileURLToPath(new URL('.', import.meta.url));

export interface BuiltImage {
  /** ghcr.io/aimesh/aimesh:<package.json version> */
  name: string;
  tarball: string;
  bytes: number;
  /** True when the cache already held an image built from the same inputs. */
  cached: boolean;
}

/** The image reference: the chart's default repository, tagged with the package version. */
export function aimeshImageName(): string {
  const { version } = JSON.parse(readFileSync(join(REPO_DIR, 'package.json'), 'utf8')) as { version: string };
  return `${IMAGE_REPOSITORY}:${version}`;
}

/** Where built images are kept, outside the repository so fresh clones reuse them. */
export function imageCacheDir(): string {
  return process.env.AIMESH_IMAGE_CACHE ?? join(homedir(), '.cache', 'aimesh', 'images');
}

export async function buildAimeshImage(): Promise<BuiltImage> {
  const name = aimeshImageName();
  const key = inputsDigest();
  const tarball = join(imageCacheDir(), `${name.replace(/[/:]/g, '_')}-${key}.tar`);
  if (existsSync(tarball)) return { name, tarball, bytes: statSync(tarball).size, cached: true };

  const work = mkdtempSync(join(tmpdir(), 'aimesh-image-'));
  try {
    const [runtime, dependencies, app] = ['runtime', 'dependencies', 'app'].map((layer) => {
      const root = join(work, layer);
      mkdirSync(root);
      return root;
    }) as [string, string, string];
    stageNodeRuntime(runtime);
    stageDependencies(join(dependencies, 'app'));
    stageApp(join(app, 'app'));
    mkdirSync(imageCacheDir(), { recursive: true });
    const partial = `${tarball}.partial`;
    await writeImageTarball(
      {
        name,
        layers: [runtime, dependencies, app],
        entrypoint: ['/usr/local/bin/node', IMAGE_ENTRY],
        env: { NODE_ENV: 'production', PATH: '/usr/local/bin:/usr/bin:/bin' },
        user: `${NONROOT}:${NONROOT}`,
        workdir: '/app',
      },
      partial,
    );
    renameSync(partial, tarball);
    pruneOlderBuilds(tarball);
    return { name, tarball, bytes: statSync(tarball).size, cached: false };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Removes tarballs of the same image built from other inputs: each source change would
 * otherwise leave about 70 MB behind.
 */
export function pruneOlderBuilds(tarball: string): void {
  const prefix = basename(tarball).replace(/-[0-9a-f]+\.tar$/, '-');
  for (const file of readdirSync(dirname(tarball)))
    if (file.startsWith(prefix) && /-[0-9a-f]+\.tar$/.test(file) && join(dirname(tarball), file) !== tarball)
      rmSync(join(dirname(tarball), file), { force: true });
}

/** All layers in one folder (for the Dockerfile). */
export function stageRootfs(root: string): void {
  stageNodeRuntime(root);
  stageDependencies(join(root, 'app'));
  stageApp(join(root, 'app'));
}

/** The application, bundled from the sources (the bundle's modules are .mjs: no package.json needed). */
function stageApp(appDir: string): void {
  mkdirSync(appDir, { recursive: true });
  bundleApp(join(appDir, 'aimesh'));
}

/**
 * Production dependencies from the lock file, installed into the staging folder (the
 * repository's own node_modules has the dev tools). The `node` package is only the runtime's
 * installer, its binary is in the runtime layer; typings, source maps and docs are dropped.
 */
function stageDependencies(appDir: string): void {
  mkdirSync(appDir, { recursive: true });
  for (const file of ['package.json', 'package-lock.json'])
    copyFileSync(join(REPO_DIR, file), join(appDir, file));
  run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], appDir);
  for (const file of ['package.json', 'package-lock.json']) rmSync(join(appDir, file));
  const modules = join(appDir, 'node_modules');
  for (const dropped of ['node', '.bin', '.package-lock.json'])
    rmSync(join(modules, dropped), { recursive: true, force: true });
  pruneFiles(modules);
}

const DROPPED_FILES = /(\.d\.[cm]?ts|\.map|\.md|\.markdown|\.ts|\.tsbuildinfo)$/i;

function pruneFiles(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) pruneFiles(path);
    else if (DROPPED_FILES.test(entry.name)) rmSync(path);
  }
}

/**
 * A digest of every input: the sources the build tsconfig compiles, the tsconfigs, the
 * package and lock files, this folder's code, the node binary and its libraries, the
 * architecture. Same digest, same image.
 */
function inputsDigest(): string {
  const hash = createHash('sha256');
  const build = JSON.parse(readFileSync(join(REPO_DIR, 'tsconfig.build.json'), 'utf8')) as {
    include: string[];
  };
  const files = [
    ...build.include.flatMap((dir) => listFiles(join(REPO_DIR, dir))).filter((f) => !f.endsWith('.test.ts')),
    ...['tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json'].map((f) =>
      join(REPO_DIR, f),
    ),
    ...listFiles(IMAGE_DIR),
  ];
  for (const file of files.sort())
    hash.update(relative(REPO_DIR, file)).update('\0').update(readFileSync(file));
  const binary = nodeBinary();
  hash.update(readFileSync(binary));
  for (const library of sharedLibraries(binary)) hash.update(library).update(String(statSync(library).size));
  hash.update(goArch());
  return hash.digest('hex').slice(0, 16);
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? listFiles(path) : [path];
  });
}

function run(command: string, args: string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.error || result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed${result.error ? `: ${result.error.message}` : ''}`);
}

async function main(args: string[]): Promise<void> {
  const rootfsFlag = args.indexOf('--rootfs');
  if (rootfsFlag >= 0) {
    const root = args[rootfsFlag + 1];
    if (!root) throw new Error('usage: npm run image -- --rootfs <empty folder>');
    mkdirSync(root, { recursive: true });
    stageRootfs(root);
    console.log(`[image] root filesystem of ${aimeshImageName()} in ${root}`);
    return;
  }
  const started = Date.now();
  const image = await buildAimeshImage();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `[image] ${image.name}: ${(image.bytes / 1e6).toFixed(1)} MB ${image.cached ? '(cached)' : `built in ${seconds} s`}`,
  );
  console.log(`[image] ${image.tarball}`);
  console.log(
    `[image] load it with: ctr -n k8s.io images import ${image.tarball}   (or: docker load -i ...)`,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(`[image] ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  });
}
