/**
 * The Node runtime layer of our images: the `node` npm package's binary (the Node that
 * package.json pins, the same one every npm script runs), the shared libraries `ldd` says it
 * loads, and the few /etc files a non-root process needs. No shell, no package manager.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { REPO_DIR } from '../test/env/components.js';

/** uid and gid of the images' user, as in distroless images. */
export const NONROOT = 65532;

/** Where the binary of the `node` package (a production dependency) lives. */
export function nodeBinary(): string {
  const require = createRequire(join(REPO_DIR, 'package.json'));
  const binary = join(dirname(require.resolve('node/package.json')), 'bin', 'node');
  return realpathSync(binary);
}

/** The shared libraries the binary loads, as `ldd` lists them (path it is loaded from). */
export function sharedLibraries(binary: string): string[] {
  const result = spawnSync('ldd', [binary], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`ldd ${binary} failed: ${result.stderr || result.error}`);
  const libraries = new Set<string>();
  for (const line of result.stdout.split('\n')) {
    // "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const match = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (match?.[1]) libraries.add(match[1]);
  }
  if (libraries.size === 0) throw new Error(`ldd listed no libraries for ${binary}: ${result.stdout}`);
  return [...libraries].sort();
}

/** Fills `root` with the runtime: /usr/local/bin/node, its libraries, /etc and /tmp. */
export function stageNodeRuntime(root: string): void {
  const binary = nodeBinary();
  const target = join(root, 'usr', 'local', 'bin', 'node');
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(binary, target);
  // The npm package's binary carries debug info (about 18 MB) that nobody reads in a pod.
  const stripped = spawnSync('strip', ['--strip-debug', target]);
  if (stripped.error)
    console.warn(`[image] strip not found, keeping debug info in node: ${stripped.error.message}`);
  chmodSync(target, 0o755);
  for (const library of sharedLibraries(binary)) {
    const copy = join(root, library);
    mkdirSync(dirname(copy), { recursive: true });
    copyFileSync(realpathSync(library), copy);
    chmodSync(copy, 0o755);
  }
  const etc = join(root, 'etc');
  mkdirSync(etc, { recursive: true });
  writeFileSync(
    join(etc, 'passwd'),
    `root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n`,
  );
  writeFileSync(join(etc, 'group'), `root:x:0:\nnonroot:x:${NONROOT}:\n`);
  // glibc resolves names through these sources; the kubelet mounts hosts and resolv.conf.
  writeFileSync(join(etc, 'nsswitch.conf'), 'hosts: files dns\n');
  const tmp = join(root, 'tmp');
  mkdirSync(tmp, { recursive: true });
  chmodSync(tmp, 0o1777);
  const home = join(root, 'home', 'nonroot');
  mkdirSync(home, { recursive: true });
}
