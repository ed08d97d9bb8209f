/**
 * The code the image runs: the CLI (operator, sidecar and every other command) and the saga
 * thread's worker, bundled by esbuild into a few minified ES modules.
 *
 * Why a bundle and not tsc's dist/: a process holds the source text of every module it
 * loads (V8 compiles functions lazily from it). Loading dependencies through their package
 * entry points brings whole libraries (undici's index alone is 131 modules: fetch,
 * websocket, cache, mocks); a bundle keeps only what is reachable from the code the command
 * runs, minified. Measured on the sidecar: 86 → 75 MiB RSS idle (BENCHMARKS.md).
 *
 * Commands load their code on demand (`await import()`), so each becomes its own chunk and
 * the sidecar never loads the operator's code, nor the operator the sidecar's.
 *
 * `tsx image/bundle.ts <folder>` writes one; `npm run build` puts one in dist/image/ for the
 * benchmarks, which measure what the image runs.
 */
import { buildSync } from 'esbuild';
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_DIR } from '../test/env/components.js';

/** The entry points the image runs, named as the files they become. */
const ENTRIES = {
  // The CLI: `node main.mjs <command>` is the image's entrypoint.
  main: 'cli/main.ts',
  // The saga thread's worker; sidecar/saga/thread finds it next to its own chunk.
  worker: 'sidecar/saga/thread/worker.ts',
};

/** The file `node` runs, inside the bundle's folder. */
export const BUNDLE_ENTRY = 'main.mjs';

/** The bundle `npm run build` writes: benchmarks run it, to measure what the image runs. */
export const BUILT_ENTRY = join(REPO_DIR, 'dist', 'image', BUNDLE_ENTRY);

/**
 * Loaded by name at run time from node_modules, not bundled:
 * - the Kubernetes client, only for kubeconfigs with exec plugins or auth providers (the
 *   operator reads plain ones itself); its own dependency tree does not bundle cleanly;
 * - the YAML parser, which is CommonJS and loaded with `await import()`: a CommonJS module
 *   in its own chunk exports only `default` from esbuild's bundle, so `(await
 *   import('yaml')).parse` would be undefined, where Node's loader finds the named exports.
 *   The image-bundle test reads a YAML kubeconfig through the bundle for this.
 */
const EXTERNAL = ['@kubernetes/client-node', 'yaml'];

export function bundleApp(outDir: string): void {
  rmSync(outDir, { recursive: true, force: true });
  buildSync({
    absWorkingDir: REPO_DIR,
    entryPoints: ENTRIES,
    outdir: outDir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    // Chunks next to the entries: the saga thread resolves ./worker.mjs from its chunk's URL.
    entryNames: '[name]',
    chunkNames: '[name]-[hash]',
    outExtension: { '.js': '.mjs' },
    external: EXTERNAL,
    // Identifiers too: keepNames would cost ~4 MiB of RSS, and error names are set
    // explicitly (AimeshError, undici's), never taken from a class's name.
    minify: true,
    legalComments: 'eof',
    // Dependencies written as CommonJS call require(); an ES module has none of its own.
    banner: {
      js: "import { createRequire as __aimeshRequire } from 'node:module'; const require = __aimeshRequire(import.meta.url);",
    },
    logLevel: 'warning',
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error('usage: tsx image/bundle.ts <folder>');
    process.exitCode = 2;
  } else {
    bundleApp(resolve(outDir));
    console.log(`[bundle] ${join(resolve(outDir), BUNDLE_ENTRY)}`);
  }
}
