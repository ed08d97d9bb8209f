export { listenHttp1AndH2c, type DualListener, type Handler } from './listener.js';
export { outboundHandler } from './handler.js';
export { resolveTarget, type Target, type TargetResult } from './target.js';
