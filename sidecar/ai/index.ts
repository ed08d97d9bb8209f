export { AiRoute, AI_PREFIX } from './route.js';
export { ChannelSelector, type Channel, type SkipReason } from './channels.js';
