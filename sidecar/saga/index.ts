export { SagaEngine, isTerminal, type EngineOptions } from './engine.js';
export { startSagaApi } from './api.js';
export { controlAuth, type ControlAuth } from './auth.js';
export { stackStepCaller, type StepCall, type StepCaller } from './caller.js';
export { FileSagaStore } from './file-store.js';
export { ConsulSagaStore } from './consul-store.js';
export { ConflictError, type SagaStore } from './store.js';
export * from './machine.js';
export { startSagaThread, type SagaThread } from './thread/index.js';
/**
 * The saga gRPC API (server, service definition, proto). Loaded on demand: grpc-js and the
 * proto loader add about 5 MB to every sidecar, and only sidecars that run sagas need them.
 */
export const loadSagaGrpc = () => import('./grpc-api.js');
