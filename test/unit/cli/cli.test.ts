/**
 * The `aimesh` command as a user meets it: help for every command, the version, exit
 * codes, stdin, JSON and YAML, and messages (never raw dumps) for missing, empty and
 * unrenderable input. Commands run in this process through runCli, with their output
 * captured; stdin and the Node-version check run as real processes.
 */
import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { AIMESH_VERSION } from '../../../api/index.js';
import { COMMANDS } from '../../../cli/help.js';
import { runCli } from '../../../cli/main.js';
import { REPO_DIR } from '../../env/components.js';

const CORE = join(REPO_DIR, 'examples', 'dual-backend', 'core.yaml');

let out: string;
let err: string;
let dir: string;

beforeEach(() => {
  out = '';
  err = '';
  dir = mkdtempSync(join(tmpdir(), 'aimesh-cli-'));
  const capture = (to: 'out' | 'err') => (chunk: unknown) => {
    if (to === 'out') out += `${String(chunk)}`;
    else err += `${String(chunk)}`;
    return true;
  };
  jest.spyOn(process.stdout, 'write').mockImplementation(capture('out'));
  jest.spyOn(process.stderr, 'write').mockImplementation(capture('err'));
  jest.spyOn(console, 'log').mockImplementation((line: unknown) => void capture('out')(`${String(line)}\n`));
  jest
    .spyOn(console, 'error')
    .mockImplementation((line: unknown) => void capture('err')(`${String(line)}\n`));
});

afterEach(() => {
  jest.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

describe('aimesh help', () => {
  it.each(Object.keys(COMMANDS))(
    '%s: "<command> --help" and "help <command>" print the command page',
    async (command) => {
      expect(await runCli([command, '--help'])).toBe(0);
      expect(out).toContain(`usage: aimesh ${COMMANDS[command]?.usage}`);
      expect(out).toContain('exit codes:');
      const page = out;
      out = '';
      expect(await runCli(['help', command])).toBe(0);
      expect(out).toBe(page);
    },
  );

  it('has a help page for every command main.ts runs', () => {
    const source = readFileSync(join(REPO_DIR, 'cli', 'main.ts'), 'utf8');
    const commands = [...source.matchAll(/^ {4}case '([a-z][a-z-]*)':/gm)].map((m) => m[1]);
    expect(commands.length).toBeGreaterThan(5);
    expect(commands.filter((c) => !COMMANDS[c as string])).toEqual([]);
  });

  it('lists every command, and a bare "aimesh" prints it to stderr with exit code 2', async () => {
    expect(await runCli(['--help'])).toBe(0);
    for (const command of Object.keys(COMMANDS)) expect(out).toMatch(new RegExp(`^  ${command} `, 'm'));
    out = '';
    expect(await runCli([])).toBe(2);
    expect(out).toBe('');
    expect(err).toContain('usage: aimesh <command>');
  });

  it('prints the version with --version and version', async () => {
    expect(await runCli(['--version'])).toBe(0);
    expect(await runCli(['version'])).toBe(0);
    expect(out).toBe(`${AIMESH_VERSION}\n${AIMESH_VERSION}\n`);
  });

  it('treats --help after "--" as the app\'s own argument', async () => {
    // run would start a sidecar; with no --config it is a usage error, proving --help was not taken.
    expect(await runCli(['run', '--', 'node', '--help'])).toBe(2);
    expect(err).toContain('run needs --config');
  });

  it('answers unknown commands and flags with exit code 2 and where to look', async () => {
    expect(await runCli(['frobnicate'])).toBe(2);
    expect(err).toBe('aimesh: unknown command "frobnicate"\nrun "aimesh help" for usage\n');
    err = '';
    expect(await runCli(['render', '--bogus', CORE])).toBe(2);
    expect(err).toMatch(/Unknown option '--bogus'.*\nrun "aimesh render --help" for usage\n$/s);
    err = '';
    expect(await runCli(['validate'])).toBe(2);
    expect(err).toContain('validate needs at least one file, folder or "-"');
  });
});

describe('aimesh validate', () => {
  it('says which file does not exist, with exit code 1', async () => {
    expect(await runCli(['validate', join(dir, 'nope.yaml')])).toBe(1);
    expect(err).toBe(`aimesh: no such file: ${join(dir, 'nope.yaml')}\n`);
  });

  it('refuses input without any resource instead of reporting "0 valid"', async () => {
    writeFileSync(join(dir, 'empty.yaml'), '# nothing yet\n');
    expect(await runCli(['validate', join(dir, 'empty.yaml')])).toBe(1);
    expect(err).toBe(`aimesh: no aimesh resources found in ${join(dir, 'empty.yaml')}\n`);
    expect(out).toBe('');
  });

  it('reads .json files in folders and kind: List', async () => {
    const core = parse(readFileSync(CORE, 'utf8')) as { metadata: { name: string } };
    mkdirSync(join(dir, 'nested'));
    writeFileSync(join(dir, 'nested', 'core.json'), JSON.stringify(core));
    const other = { ...core, metadata: { ...core.metadata, name: 'other' } };
    writeFileSync(join(dir, 'list.yaml'), stringify({ apiVersion: 'v1', kind: 'List', items: [other] }));
    writeFileSync(join(dir, 'notes.txt'), 'not a resource');
    expect(await runCli(['validate', dir])).toBe(0);
    expect(out).toContain(`ok      ${join(dir, 'list.yaml')} AiService/other`);
    expect(out).toContain(`ok      ${join(dir, 'nested', 'core.json')} AiService/core`);
    expect(out).toContain('2 valid, 0 invalid');
  });

  it('reports invalid resources with their fields and exit code 1', async () => {
    const bad = join(REPO_DIR, 'examples', 'invalid', 'bad-duration.yaml');
    expect(await runCli(['validate', bad])).toBe(1);
    expect(out).toMatch(/spec\.upstreams\[0\]\.timeout: must be a duration/);
  });

  it('reads standard input as "-"', () => {
    const result = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(REPO_DIR, 'cli', 'main.ts'), 'validate', '-'],
      {
        input: readFileSync(CORE),
        encoding: 'utf8',
        cwd: REPO_DIR,
      },
    );
    expect(result.stdout).toBe('ok      - AiService/core\n1 valid, 0 invalid\n');
    expect(result.status).toBe(0);
  });
});

describe('aimesh render', () => {
  it('writes one file per AiService, in --namespace when the resource names none', async () => {
    const outdir = join(dir, 'out');
    writeFileSync(join(dir, 'core.yaml'), readFileSync(CORE, 'utf8').replace(/^ {2}namespace: .*\n/m, ''));
    expect(await runCli(['render', '--out', outdir, '--namespace', 'team-a', join(dir, 'core.yaml')])).toBe(
      0,
    );
    expect(readdirSync(outdir)).toEqual(['team-a.core.k8s.yaml']);
    expect(out).toContain('rendered 1 AiServices into');
  });

  it('reports a name the API server would refuse as invalid, naming the field, without a raw dump', async () => {
    const text = readFileSync(CORE, 'utf8').replace(/^ {2}name: core$/m, '  name: Core_Service');
    writeFileSync(join(dir, 'bad.yaml'), text);
    expect(await runCli(['render', '--out', join(dir, 'out'), join(dir, 'bad.yaml')])).toBe(1);
    expect(err).toContain(`invalid ${join(dir, 'bad.yaml')} AiService/Core_Service`);
    expect(err).toMatch(/metadata\.name: must be at most 63 lowercase letters/);
    expect(err).not.toContain('"code"');
  });
});

describe('the installed aimesh executable', () => {
  it('refuses an unsupported Node with the version it needs, before loading anything', () => {
    const older = 'Object.defineProperty(process.versions, "node", { value: "20.11.0" })';
    const result = spawnSync(
      process.execPath,
      [
        '--import',
        `data:text/javascript,${encodeURIComponent(older)}`,
        '--import',
        'tsx',
        join(REPO_DIR, 'cli', 'bin.ts'),
        '--version',
      ],
      { encoding: 'utf8', cwd: REPO_DIR },
    );
    expect(result.stderr).toContain('aimesh: needs Node.js 24 or later, but this is Node.js 20.11.0.');
    expect(result.stdout).toBe('');
    expect(result.status).toBe(1);
  });

  it('runs the CLI on a supported Node', () => {
    const result = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(REPO_DIR, 'cli', 'bin.ts'), '--version'],
      {
        encoding: 'utf8',
        cwd: REPO_DIR,
      },
    );
    expect(result.stdout).toBe(`${AIMESH_VERSION}\n`);
    expect(result.status).toBe(0);
  });
});
