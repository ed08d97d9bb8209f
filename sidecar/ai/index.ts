export { AiRoute, AI_PREFIX, aiRouteSignature, type AiRouteDeps } from './route.js';
export { ChannelSelector, type Channel, type SkipReason } from './channels.js';
