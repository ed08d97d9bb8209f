/**
 * `npm run testenv`: builds the control-plane binaries that are missing, with `go build`
 * from the pinned Go modules under modules/, and unpacks the pinned Debian packages
 * (DEBIAN_COMPONENTS), into the cache outside the repository.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { resolveBinary, type BinaryName } from './binaries.js';
import {
  COMPONENTS,
  DEBIAN_COMPONENTS,
  ISTIO_API,
  componentCacheDir,
  istioCrdsPath,
  moduleDir,
  pinnedVersion,
  type Component,
  type DebianComponent,
} from './components.js';

const started = Date.now();
let failed = false;
for (const component of COMPONENTS) {
  const missing = component.binaries.filter((b) => !resolveBinary(b.name as BinaryName));
  const version = pinnedVersion(component);
  if (missing.length === 0) {
    const where = component.binaries.map((b) => `${b.name} (${resolveBinary(b.name as BinaryName)?.source})`);
    log(`${component.name} ${version}: have ${where.join(', ')}`);
    continue;
  }
  failed = !build(component, version) || failed;
}
for (const component of DEBIAN_COMPONENTS) {
  if (component.binaries.every((b) => resolveBinary(b.name as BinaryName))) {
    log(`${component.name} ${component.version}: have ${componentCacheDir(component)}`);
    continue;
  }
  failed = !unpackDebian(component) || failed;
}
failed = !fetchIstioCrds() || failed;
log(`done in ${seconds(started)}`);
process.exitCode = failed ? 1 : 0;

function build(component: Component, version: string): boolean {
  const target = componentCacheDir(component);
  const staging = `${target}.partial`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  const names = component.binaries.map((b) => b.name).join(', ');
  log(`${component.name} ${version}: building ${names} with go build (first build takes minutes)...`);
  const begin = Date.now();
  for (const binary of component.binaries) {
    const ldflags = ['-s', '-w', ...component.versionFlags(version)].join(' ');
    const args = [
      'build',
      '-trimpath',
      '-ldflags',
      ldflags,
      '-o',
      join(staging, binary.name),
      binary.package,
    ];
    const result = spawnSync('go', args, {
      cwd: moduleDir(component),
      stdio: 'inherit',
      env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=readonly' },
    });
    if (result.error || result.status !== 0) {
      log(
        `${component.name}: go build of ${binary.package} failed${result.error ? `: ${result.error.message}` : ''}`,
      );
      return false;
    }
  }
  rmSync(target, { recursive: true, force: true });
  renameSync(staging, target);
  log(`${component.name} ${version}: built in ${seconds(begin)} -> ${target}`);
  return true;
}

/** apt-get download (no install, no root needed for the download itself) and dpkg -x. */
function unpackDebian(component: DebianComponent): boolean {
  const target = componentCacheDir(component);
  const staging = `${target}.partial`;
  const work = mkdtempSync(join(tmpdir(), `aimesh-deb-${component.name}-`));
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  const spec = `${component.debianPackage}=${component.version}`;
  log(`${component.name} ${component.version}: apt-get download ${spec}...`);
  try {
    const download = spawnSync('apt-get', ['download', '-qq', spec], { cwd: work, encoding: 'utf8' });
    if (download.error || download.status !== 0) {
      log(
        `${component.name}: apt-get download ${spec} failed (${download.error?.message ?? download.stderr.trim()}); ` +
          'run "apt-get update" if the package lists are missing, or change the pinned version in test/env/components.ts',
      );
      return false;
    }
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
    const root = join(work, 'root');
    const unpack = deb && spawnSync('dpkg', ['-x', join(work, deb), root], { encoding: 'utf8' });
    if (!unpack || unpack.status !== 0) {
      log(`${component.name}: dpkg -x failed: ${unpack ? unpack.stderr : 'no .deb downloaded'}`);
      return false;
    }
    for (const binary of component.binaries)
      copyFileSync(join(root, binary.path), join(staging, binary.name));
    rmSync(target, { recursive: true, force: true });
    renameSync(staging, target);
    log(`${component.name} ${component.version}: unpacked -> ${target}`);
    return true;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function fetchIstioCrds(): boolean {
  const target = istioCrdsPath();
  if (existsSync(target)) {
    log(`istio CRDs ${ISTIO_API.version}: have ${target}`);
    return true;
  }
  const result = spawnSync('go', ['mod', 'download', '-json', `${ISTIO_API.module}@${ISTIO_API.version}`], {
    encoding: 'utf8',
    cwd: tmpdir(),
  });
  if (result.status !== 0) {
    log(`istio CRDs: go mod download failed: ${result.stderr}`);
    return false;
  }
  const { Dir } = JSON.parse(result.stdout) as { Dir: string };
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(join(Dir, ISTIO_API.file), target);
  log(`istio CRDs ${ISTIO_API.version}: copied from the ${ISTIO_API.module} module -> ${target}`);
  return true;
}

function log(message: string): void {
  console.log(`[testenv] ${message}`);
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}
