export {
  listenHttp1AndH2c,
  type DualListener,
  type EdgeCloseReason,
  type Handler,
  type ListenerOptions,
  type UpgradeHandler,
} from './listener.js';
export { outboundHandler, outboundUpgradeHandler } from './handler.js';
export { resolveTarget, type Target, type TargetResult } from './target.js';
