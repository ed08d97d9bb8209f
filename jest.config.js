// jest runs the TypeScript sources as ESM so it can load ESM-only dependencies
// (@kubernetes/client-node 2.x); package.json runs it with --experimental-vm-modules.
const typescript = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }] },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testEnvironment: 'node',
};

/** @type {import('jest').Config} */
export default {
  projects: [
    { ...typescript, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...typescript,
      displayName: 'e2e',
      testMatch: ['<rootDir>/test/e2e/**/*.test.ts'],
      // One real control plane and Consul agent for the whole e2e run.
      globalSetup: '<rootDir>/test/e2e/setup.js',
      globalTeardown: '<rootDir>/test/e2e/teardown.js',
    },
    // aimesh in pods on a one-node cluster (test/env/node.ts); one node per machine, so one file.
    { ...typescript, displayName: 'node', testMatch: ['<rootDir>/test/node/**/*.test.ts'] },
  ],
  testTimeout: 300000,
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
};
