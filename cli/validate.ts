import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { formatErrors, validateResource, type FieldError, type Resource } from '../api/index.js';

export interface FileReport {
  file: string;
  /** Index of the document within a multi-document YAML file. */
  document: number;
  name: string;
  kind: string;
  errors: FieldError[];
  resource?: Resource;
}

/** Validates every aimesh resource in the given YAML files or folders (recursively). */
export function validateFiles(paths: string[]): FileReport[] {
  return paths.flatMap(yamlFiles).flatMap(validateFile);
}

export function validateFile(file: string): FileReport[] {
  const documents = parseAllDocuments(readFileSync(file, 'utf8'));
  return documents.flatMap((document, index) => {
    if (document.errors.length > 0) {
      const errors = document.errors.map((e) => ({ field: '', message: `YAML: ${e.message}` }));
      return [{ file, document: index, name: '?', kind: '?', errors }];
    }
    const value: unknown = document.toJS();
    if (value === null || value === undefined) return [];
    const { kind = '?', metadata } = value as { kind?: string; metadata?: { name?: string } };
    const result = validateResource(value);
    return [
      {
        file,
        document: index,
        name: metadata?.name ?? '?',
        kind,
        errors: result.ok ? [] : result.errors,
        ...(result.ok ? { resource: result.resource } : {}),
      },
    ];
  });
}

export function runValidate(paths: string[]): number {
  if (paths.length === 0) {
    console.error('usage: aimesh validate <file-or-folder>...');
    return 2;
  }
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

export function yamlFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .sort()
    .flatMap((entry) => {
      const child = join(path, entry);
      if (statSync(child).isDirectory()) return yamlFiles(child);
      return /\.ya?ml$/.test(entry) ? [child] : [];
    });
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}
