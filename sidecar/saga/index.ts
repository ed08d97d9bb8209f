export { SagaEngine, isTerminal, type EngineOptions } from './engine.js';
export { startSagaApi } from './api.js';
export { controlAuth, type ControlAuth } from './auth.js';
export { stackStepCaller, type StepCall, type StepCaller } from './caller.js';
export { FileSagaStore } from './file-store.js';
export { ConsulSagaStore } from './consul-store.js';
export { ConflictError, type SagaStore } from './store.js';
export * from './machine.js';
export { startSagaGrpcApi, sagaServiceDefinition, SAGA_PROTO } from './grpc-api.js';
