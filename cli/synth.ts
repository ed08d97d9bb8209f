/**
 * `cdk8s synth` (see cdk8s.yaml) and `aimesh render`: validate AiService and Saga files and
 * write what the operator would apply, one YAML file per AiService, through the same pure
 * render function the operator uses. No cluster is needed (GitOps).
 */
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { ZodError } from 'zod';
import { fieldPath, type AiService, type FieldError, type Saga } from '../api/index.js';
import { describe } from '../lib/errors/index.js';
import {
  renderAiService,
  renderInputs,
  type KubeObject,
  type RenderInput,
  type RenderOptions,
} from '../render/index.js';
import { validateFiles, type FileReport } from './validate.js';

export interface SynthResult {
  /** Files written, relative to the output folder. */
  written: string[];
  /** Resources that failed validation; nothing is written for them. */
  invalid: FileReport[];
  aiServices: number;
  sagas: number;
  objects: number;
}

export interface SynthOptions extends RenderOptions {
  /** Namespace for resources whose files name none. */
  namespace?: string;
}

/**
 * Renders every valid AiService under `paths` into `outdir`. Invalid resources are
 * reported and skipped, never half-rendered. Sagas are validated and gathered with the
 * AiServices they concern by the same function the operator uses; their definitions
 * travel in their orchestrator's sidecar config, so they add no files of their own.
 */
export function synthesize(
  paths: string[],
  outdir: string,
  options: SynthOptions = {},
  onProgress: (done: number, total: number, name: string) => void = () => {},
): SynthResult {
  const reports = validateFiles(paths);
  const result: SynthResult = { written: [], invalid: [], aiServices: 0, sagas: 0, objects: 0 };
  mkdirSync(outdir, { recursive: true });
  const valid: (AiService | Saga)[] = [];
  const reportOf = new Map<AiService | Saga, FileReport>();
  for (const report of reports) {
    if (report.errors.length > 0 || !report.resource) result.invalid.push(report);
    else {
      valid.push(report.resource);
      reportOf.set(report.resource, report);
    }
  }
  result.sagas = valid.filter((r) => r.kind === 'Saga').length;
  const inputs = renderInputs(valid, options.namespace);
  inputs.forEach((input, done) => {
    onProgress(done, inputs.length, `${input.namespace}/${input.resource.metadata.name}`);
    let objects: KubeObject[];
    try {
      objects = renderAiService(input, options);
    } catch (error) {
      // A resource the schema let through but the render cannot express (the sidecar
      // config is validated again): reported like a validation error, not thrown.
      const report = reportOf.get(input.resource) as FileReport;
      result.invalid.push({ ...report, errors: renderErrors(error) });
      return;
    }
    const file = fileFor(input);
    writeFileSync(join(outdir, file), objects.map((o) => stringify(o, { lineWidth: 0 })).join('---\n'));
    result.written.push(file);
    result.aiServices++;
    result.objects += objects.length;
  });
  return result;
}

/** What the operator would apply for these valid resources, one file per AiService. Pure. */
export function renderFiles(
  resources: readonly (AiService | Saga)[],
  options: SynthOptions = {},
): { file: string; objects: KubeObject[] }[] {
  return renderInputs(resources, options.namespace).map((input) => ({
    file: fileFor(input),
    objects: renderAiService(input, options),
  }));
}

function fileFor(input: RenderInput): string {
  return `${input.namespace}.${input.resource.metadata.name}.k8s.yaml`;
}

function renderErrors(error: unknown): FieldError[] {
  if (error instanceof ZodError) {
    return error.issues.map((issue) => ({
      field: '',
      message: `cannot render: sidecar config ${fieldPath(issue.path)}: ${issue.message}`,
    }));
  }
  return [{ field: '', message: `cannot render: ${describe(error)}` }];
}

/** Folders of examples/ that are not a system written as aimesh resources. */
const NOT_SYSTEMS = new Set([
  'invalid', // resources that must fail, with their errors
  'cdk8s-app', // a cdk8s app in TypeScript that uses the package's constructs
]);

/** The example systems: every folder of examples/ that holds a system's resources. */
export function exampleSystems(examplesDir: string): string[] {
  return readdirSync(examplesDir)
    .filter((entry) => !NOT_SYSTEMS.has(entry) && statSync(join(examplesDir, entry)).isDirectory())
    .sort()
    .map((entry) => join(examplesDir, entry));
}

export function printSynthResult(result: SynthResult, outdir: string): void {
  for (const report of result.invalid) {
    const errors = report.errors.map((e) => `  ${e.field ? `${e.field}: ` : ''}${e.message}`).join('\n');
    console.error(`invalid ${report.file} ${report.kind}/${report.name}\n${errors}`);
  }
  const nearby = relative(process.cwd(), outdir);
  const where = nearby.startsWith('..') ? outdir : nearby || '.';
  console.log(
    `rendered ${result.aiServices} AiServices into ${result.objects} objects in ${where}/ ` +
      `(${result.sagas} Sagas validated, ${result.invalid.length} invalid resources)`,
  );
}

// Run as a program: this is the app `cdk8s synth` runs, and what `npm start` runs.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const repo = resolve(fileURLToPath(import.meta.url), '..', '..');
  const outdir = resolve(process.env.CDK8S_OUTDIR ?? join(repo, 'dist', 'manifests'));
  const inputs = process.argv.length > 2 ? process.argv.slice(2) : exampleSystems(join(repo, 'examples'));
  const result = synthesize(inputs, outdir);
  printSynthResult(result, outdir);
  process.exitCode = result.invalid.length > 0 ? 1 : 0;
}
