/**
 * `aimesh validate`, and the one way every CLI command reads resources: files, folders
 * (recursively: .yaml, .yml and .json) and `-` for standard input, in YAML or JSON, one or
 * many documents per file, `kind: List` expanded as kubectl does.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { formatErrors, validateResource, type FieldError, type Resource } from '../api/index.js';
import { AimeshError } from '../lib/errors/index.js';

export interface FileReport {
  file: string;
  /** Index of the document within a multi-document YAML file. */
  document: number;
  name: string;
  kind: string;
  errors: FieldError[];
  resource?: Resource;
}

/** How standard input is named in reports. */
export const STDIN = '-';
const RESOURCE_FILE = /\.(ya?ml|json)$/;

/**
 * Validates every aimesh resource in the given files or folders (recursively) or `-`.
 * Throws an `input.not-found` AimeshError for a path that does not exist, and an
 * `input.invalid` one when the inputs hold no resource at all: "0 valid" would read as
 * success for what is almost always a wrong path.
 */
export function validateFiles(paths: string[]): FileReport[] {
  const reports = paths.flatMap(resourceFiles).flatMap(validateFile);
  if (reports.length === 0) {
    throw new AimeshError('input.invalid', `no aimesh resources found in ${paths.join(', ')}`);
  }
  return reports;
}

/** The reports of one file (or `-`), one per document; empty documents are skipped. */
export function validateFile(file: string): FileReport[] {
  const documents = parseAllDocuments(readInput(file));
  return documents.flatMap((document, index) => {
    if (document.errors.length > 0) {
      const errors = document.errors.map((e) => ({ field: '', message: `YAML: ${e.message}` }));
      return [{ file, document: index, name: '?', kind: '?', errors }];
    }
    return listItems(document.toJS()).map((value) => reportOf(file, index, value));
  });
}

/** `aimesh validate`: one line per resource, a summary, exit code 1 when any is invalid. */
export function runValidate(paths: string[]): number {
  const reports = validateFiles(paths);
  let failed = 0;
  for (const report of reports) {
    const where = `${report.file}${report.document > 0 ? `#${report.document}` : ''} ${report.kind}/${report.name}`;
    if (report.errors.length === 0) {
      console.log(`ok      ${where}`);
    } else {
      failed++;
      console.log(`invalid ${where}\n${indent(formatErrors(report.errors))}`);
    }
  }
  console.log(`${reports.length - failed} valid, ${failed} invalid`);
  return failed === 0 ? 0 : 1;
}

function reportOf(file: string, document: number, value: unknown): FileReport {
  const { kind = '?', metadata } = (value ?? {}) as { kind?: string; metadata?: { name?: string } };
  const result = validateResource(value);
  return {
    file,
    document,
    name: metadata?.name ?? '?',
    kind,
    errors: result.ok ? [] : result.errors,
    ...(result.ok ? { resource: result.resource } : {}),
  };
}

/** A document's resources: none for an empty one, the items of a `kind: List`, or itself. */
function listItems(value: unknown): unknown[] {
  if (value === null || value === undefined) return [];
  const list = value as { kind?: unknown; items?: unknown };
  if (list.kind === 'List' && Array.isArray(list.items)) return list.items as unknown[];
  return [value];
}

function readInput(file: string): string {
  try {
    return readFileSync(file === STDIN ? 0 : file, 'utf8');
  } catch (error) {
    throw inputError(file, error);
  }
}

/** The files a path stands for: itself, every YAML and JSON file under a folder, or stdin. */
export function resourceFiles(path: string): string[] {
  if (path === STDIN) return [path];
  let directory: boolean;
  try {
    directory = statSync(path).isDirectory();
  } catch (error) {
    throw inputError(path, error);
  }
  if (!directory) return [path];
  return readdirSync(path)
    .sort()
    .flatMap((entry) => {
      const child = join(path, entry);
      if (statSync(child).isDirectory()) return resourceFiles(child);
      return RESOURCE_FILE.test(entry) ? [child] : [];
    });
}

function inputError(path: string, error: unknown): AimeshError {
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOENT') return new AimeshError('input.not-found', `no such file: ${path}`);
  if (code === 'EACCES') return new AimeshError('input.forbidden', `cannot read ${path}: permission denied`);
  if (code === 'EISDIR') return new AimeshError('input.invalid', `${path} is a folder`);
  return new AimeshError('input.invalid', `cannot read ${path}: ${(error as Error).message}`, {
    cause: error,
  });
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}
