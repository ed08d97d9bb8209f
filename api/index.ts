export * from './common.js';
export * from './aiservice.js';
export * from './injection.js';
export * from './saga.js';
export * from './template.js';
export * from './validate.js';
export * from './sidecar-config.js';
export * from './version.js';
