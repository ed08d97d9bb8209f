#!/usr/bin/env node
/**
 * The `aimesh` executable. It checks the Node version before anything else is loaded:
 * on an older Node the CLI's dependencies (undici among them) fail deep inside with
 * errors that say nothing about the version needed. Static imports would be evaluated
 * before this check, so the CLI itself is imported dynamically.
 */
const REQUIRED_NODE_MAJOR = 24;

const major = Number(process.versions.node.split('.')[0]);
if (major < REQUIRED_NODE_MAJOR) {
  process.stderr.write(
    `aimesh: needs Node.js ${REQUIRED_NODE_MAJOR} or later, but this is Node.js ${process.versions.node}.\n` +
      `Install Node.js ${REQUIRED_NODE_MAJOR} LTS (https://nodejs.org) or run the aimesh image instead.\n`,
  );
  process.exitCode = 1;
} else {
  const { runCli } = await import('./main.js');
  process.exitCode = await runCli(process.argv.slice(2));
}
