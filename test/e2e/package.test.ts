/**
 * aimesh as a user installs it: the packed tarball (what `npm publish` would upload), a
 * global install of its CLI, and a cdk8s app in a fresh folder outside the repository
 * that installs the tarball from disk and cdk8s from the registry, type-checks against
 * the shipped .d.ts, synthesizes, and applies to the test API server.
 *
 * The npm installs are slow and need the registry, so their folders are cached outside
 * the repository, keyed by the tarball's hash (npm packs with fixed timestamps, so the
 * same sources give the same hash) and the example app's files.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { AIMESH_VERSION } from '../../api/index.js';
import { renderFiles } from '../../cli/synth.js';
import { validateFiles } from '../../cli/validate.js';
import { REPO_DIR } from '../env/components.js';
import { kubectl } from './shared.js';

const EXAMPLE_APP = join(REPO_DIR, 'examples', 'cdk8s-app');
const EXAMPLE_FILES = ['package.json', 'cdk8s.yaml', 'tsconfig.json', 'main.ts'];
const CACHE = join(
  process.env.AIMESH_TESTENV_CACHE ?? join(homedir(), '.cache', 'aimesh', 'testenv'),
  'package-test',
);
const INSTALL_TIMEOUT = 15 * 60_000;

// Node 24 (the one running the tests) first, whatever node the machine has on PATH.
const ENV = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}` };

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, env: { ...ENV, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: INSTALL_TIMEOUT },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function mustRun(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) {
  const result = await run(command, args, cwd, env);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} (in ${cwd}) exited ${result.code}:\n${result.stderr}${result.stdout}`,
    );
  }
  return result;
}

function sha256(...parts: (string | Buffer)[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex').slice(0, 16);
}

/**
 * A folder prepared once per `<kind>-<hash>` key, marked complete only when `prepare`
 * succeeded. Preparing a new one removes the other folders of its kind: they belong to
 * older tarballs and would only fill the disk.
 */
async function cached(key: string, prepare: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(CACHE, key);
  if (existsSync(join(dir, '.complete'))) return dir;
  mkdirSync(CACHE, { recursive: true });
  const kind = key.slice(0, key.lastIndexOf('-') + 1);
  for (const old of readdirSync(CACHE).filter((d) => d.startsWith(kind))) {
    rmSync(join(CACHE, old), { recursive: true, force: true });
  }
  mkdirSync(dir);
  await prepare(dir);
  writeFileSync(join(dir, '.complete'), '');
  return dir;
}

function parseYaml(text: string): { kind: string; metadata: { name: string; namespace?: string } }[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as { kind: string; metadata: { name: string } } | null)
    .filter((o): o is { kind: string; metadata: { name: string } } => o !== null);
}

let work: string;
let tarball: string;
let tarballHash: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'aimesh-package-'));
  const packed = await mustRun('npm', ['pack', '--pack-destination', work], REPO_DIR);
  tarball = join(work, packed.stdout.trim().split('\n').pop() as string);
  tarballHash = sha256(readFileSync(tarball));
}, INSTALL_TIMEOUT);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the npm package', () => {
  it('ships the built JavaScript, its types, the CRDs and the chart, and nothing else', async () => {
    const listed = await mustRun('tar', ['-tzf', tarball], work);
    const files = listed.stdout
      .trim()
      .split('\n')
      .map((f) => f.replace(/^package\//, ''));
    for (const needed of [
      'package.json',
      'README.md',
      'LICENSE',
      'dist/cli/bin.js',
      'dist/cli/main.js',
      'dist/cdk8s/index.js',
      'dist/cdk8s/index.d.ts',
      'dist/api/index.d.ts',
      'dist/render/index.d.ts',
      'crds/aimesh.io_aiservices.yaml',
      'charts/aimesh-operator/Chart.yaml',
    ]) {
      expect(files).toContain(needed);
    }
    const unwanted = files.filter(
      (f) =>
        /^(test|bench|examples|scratch|node_modules)\//.test(f) ||
        (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
        f.endsWith('.map') ||
        // The image's bundle is for the image and the benchmarks, not for importers.
        f.startsWith('dist/image/') ||
        f === 'dist/tools/generate.js',
    );
    expect(unwanted).toEqual([]);
    // A bound that catches a folder shipped by mistake; the product itself is about 270 files.
    expect(files.length).toBeLessThan(320);

    const manifest = JSON.parse(readFileSync(join(REPO_DIR, 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(manifest.private).toBeUndefined();
    expect(Object.keys(manifest.dependencies as object)).not.toContain('node');
    expect(Object.keys(manifest.devDependencies as object)).toContain('node');
    // A cdk8s app brings its own cdk8s and constructs: aimesh's constructs must join that tree.
    expect(Object.keys(manifest.dependencies as object)).not.toContain('cdk8s');
    expect(Object.keys(manifest.dependencies as object)).not.toContain('constructs');
    expect(Object.keys(manifest.peerDependencies as object).sort()).toEqual(['cdk8s', 'constructs']);
  });

  it(
    'installs globally as an `aimesh` command that works',
    async () => {
      const prefix = await cached(`global-${tarballHash}`, async (dir) => {
        await mustRun('npm', ['install', '-g', '--no-audit', '--no-fund', '--prefix', dir, tarball], dir);
      });
      const aimesh = join(prefix, 'bin', 'aimesh');
      expect((await mustRun(aimesh, ['--version'], work)).stdout).toBe(`${AIMESH_VERSION}\n`);
      const validated = await mustRun(aimesh, ['validate', join(REPO_DIR, 'examples', 'suoke-life')], work);
      expect(validated.stdout).toMatch(/\d+ valid, 0 invalid/);
      expect((await mustRun(aimesh, ['crds'], work)).stdout).toContain('kind: CustomResourceDefinition');
      const help = await mustRun(aimesh, ['render', '--help'], work);
      expect(help.stdout).toContain('usage: aimesh render');
    },
    INSTALL_TIMEOUT,
  );
});

describe('a cdk8s app using aimesh/cdk8s, installed from the tarball', () => {
  let app: string;

  beforeAll(async () => {
    const example = EXAMPLE_FILES.map((f) => readFileSync(join(EXAMPLE_APP, f)));
    app = await cached(`cdk8s-app-${sha256(tarballHash, ...example)}`, async (dir) => {
      for (const file of EXAMPLE_FILES) cpSync(join(EXAMPLE_APP, file), join(dir, file));
      // The tarball stands in for the published `aimesh` the example depends on.
      await mustRun('npm', ['install', '--no-audit', '--no-fund', tarball], dir);
    });
    rmSync(join(app, 'dist'), { recursive: true, force: true });
    await kubectl(['create', 'namespace', 'shop']);
  }, INSTALL_TIMEOUT);

  it('has one copy of cdk8s and of constructs: the app’s own', async () => {
    for (const name of ['cdk8s', 'constructs']) {
      const listed = await mustRun('npm', ['ls', name, '--all', '--parseable'], app);
      expect({ name, copies: new Set(listed.stdout.trim().split('\n')) }).toEqual({
        name,
        copies: new Set([join(app, 'node_modules', name)]),
      });
    }
  });

  it('type-checks against the shipped declarations', async () => {
    const checked = await run('npx', ['tsc', '--noEmit', '-p', '.'], app);
    expect(checked.stdout + checked.stderr).toBe('');
    expect(checked.code).toBe(0);
  });

  it('synthesizes custom resources that the API server accepts', async () => {
    await mustRun('npx', ['cdk8s', 'synth', '--check-upgrade=false'], app);
    const text = readFileSync(join(app, 'dist', 'shop.k8s.yaml'), 'utf8');
    expect(parseYaml(text).map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      'AiService/payments',
      'AiService/assistant',
      'AiService/orders',
      'Saga/checkout',
    ]);
    const applied = await kubectl(['apply', '--server-side', '--dry-run=server', '-f', '-'], text);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
  });

  it('in rendered mode synthesizes exactly what the render gives for the same resources', async () => {
    await mustRun('npx', ['cdk8s', 'synth', '--check-upgrade=false', '--output', 'dist/resources'], app);
    await mustRun('npx', ['cdk8s', 'synth', '--check-upgrade=false', '--output', 'dist/rendered'], app, {
      AIMESH_MODE: 'rendered',
    });
    const resources = validateFiles([join(app, 'dist', 'resources')]).map((r) => {
      expect(r.errors).toEqual([]);
      return r.resource as NonNullable<typeof r.resource>;
    });
    const text = readFileSync(join(app, 'dist', 'rendered', 'shop.k8s.yaml'), 'utf8');
    const rendered = parseAllDocuments(text).map((d) => d.toJS() as unknown);
    expect(rendered).toEqual(renderFiles(resources).flatMap((f) => f.objects));
    expect(readdirSync(join(app, 'dist', 'rendered'))).toEqual(['shop.k8s.yaml']);
    const applied = await kubectl(['apply', '--server-side', '--dry-run=server', '-f', '-'], text);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
  });

  it('fails synth on an invalid prop, naming the field and the reason', async () => {
    const main = readFileSync(join(app, 'main.ts'), 'utf8');
    // Type-correct but against a rule: the port is in Istio's reserved range.
    const invalid = main.replace(
      /port: 8080,\n(\s+)replicas: 2,\n(\s+)healthCheck/,
      'port: 15001,\n$1replicas: 2,\n$2healthCheck',
    );
    expect(invalid).not.toBe(main);
    writeFileSync(join(app, 'invalid.ts'), invalid);
    const synth = await run(
      'npx',
      ['cdk8s', 'synth', '--check-upgrade=false', '--app', 'npx tsx invalid.ts', '--output', 'dist/invalid'],
      app,
    );
    expect(synth.code).not.toBe(0);
    expect(synth.stdout + synth.stderr).toContain(
      "[shop/payments] spec.port: port is in Istio's reserved range 15000-15090; choose another port",
    );
  });
});
