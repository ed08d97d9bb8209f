import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AIMESH_VERSION } from '../../api/index.js';
import { BUNDLE_ENTRY, bundleApp } from '../../image/bundle.js';
import { REPO_DIR } from '../env/components.js';
import { sharedEnvironment } from './shared.js';

/**
 * The image runs the CLI bundled by esbuild, not the sources. Each command is its own
 * chunk, loaded on demand, so a command whose chunk does not load would only fail in a
 * pod. This builds the bundle and runs the commands that need no cluster through it, next
 * to the sources, and compares what they write. The operator and the sidecar (with its
 * saga thread) run from the bundle in the node test, inside the image.
 */
let dir: string;
let bundle: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'aimesh-bundle-'));
  bundle = join(dir, 'bundle');
  bundleApp(bundle);
  // What the bundle loads by name comes from node_modules beside it, as /app/node_modules
  // is beside /app/aimesh in the image.
  symlinkSync(join(REPO_DIR, 'node_modules'), join(dir, 'node_modules'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function fromBundle(args: string[]) {
  return spawnSync(process.execPath, [join(bundle, BUNDLE_ENTRY), ...args], {
    cwd: REPO_DIR,
    encoding: 'utf8',
  });
}

function fromSources(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', join(REPO_DIR, 'cli', 'main.ts'), ...args], {
    cwd: REPO_DIR,
    encoding: 'utf8',
  });
}

describe('the bundle the image runs', () => {
  it('holds the CLI and, next to it, the saga thread worker the sidecar starts', () => {
    expect(existsSync(join(bundle, BUNDLE_ENTRY))).toBe(true);
    // sidecar/saga/thread resolves ./worker.mjs from its own chunk's URL, in the same folder.
    expect(existsSync(join(bundle, 'worker.mjs'))).toBe(true);
    expect(readdirSync(bundle).every((f) => f.endsWith('.mjs'))).toBe(true);
    const version = fromBundle(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toBe(AIMESH_VERSION);
  });

  it('renders every example system as the sources do', () => {
    const examples = join(REPO_DIR, 'examples', 'suoke-life');
    const [bundled, sources] = [fromBundle, fromSources].map((run, i) => {
      const out = join(dir, `render-${i}`);
      const result = run(['render', '--out', out, examples]);
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      return Object.fromEntries(readdirSync(out).map((f) => [f, readFileSync(join(out, f), 'utf8')]));
    });
    expect(Object.keys(bundled ?? {}).length).toBeGreaterThan(3);
    expect(bundled).toEqual(sources);
  });

  it('reports invalid resources with the same messages and exit code', () => {
    const invalid = join(REPO_DIR, 'examples', 'invalid');
    const bundled = fromBundle(['validate', invalid]);
    const sources = fromSources(['validate', invalid]);
    expect(bundled.status).toBe(1);
    expect(bundled.status).toBe(sources.status);
    expect(bundled.stdout + bundled.stderr).toBe(sources.stdout + sources.stderr);
    expect(bundled.stdout + bundled.stderr).toContain('unknown-field.yaml');
  });

  it('reads a YAML kubeconfig and asks the API server as the sources do (doctor)', () => {
    // The kubeconfig's YAML parser is loaded on demand; a CommonJS package imported that way
    // loses its named exports in a bundle's chunk (image/bundle.ts keeps it external).
    const { kubeconfig } = sharedEnvironment().controlPlane;
    expect(readFileSync(kubeconfig, 'utf8').trimStart().startsWith('{')).toBe(false);
    const bundled = fromBundle(['doctor', `--kubeconfig=${kubeconfig}`]);
    const sources = fromSources(['doctor', `--kubeconfig=${kubeconfig}`]);
    expect(bundled.stderr).not.toMatch(/not YAML|is not a function/);
    expect(bundled.status).toBe(sources.status);
    expect(bundled.stdout).toBe(sources.stdout);
    expect(bundled.stdout.length).toBeGreaterThan(0);
  });

  it('prints the saga .proto and the CRDs as the sources do', () => {
    for (const args of [['saga', 'proto'], ['crds']]) {
      const bundled = fromBundle(args);
      expect(bundled.status).toBe(0);
      expect(bundled.stdout.length).toBeGreaterThan(500);
      expect(bundled.stdout).toBe(fromSources(args).stdout);
    }
  });
});
