// jest loads global setup with Node's own ESM loader, which cannot resolve the TypeScript
// sources' ".js" imports; tsx's loader can, so the real setup runs through it.
import { register } from 'tsx/esm/api';

register();
const { default: setup } = await import('./global-setup.ts');
export default setup;
