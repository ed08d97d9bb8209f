/**
 * The validating webhook for AiService and Saga: the API server runs the CRD schema and
 * its CEL rules, but some rules cannot be CEL (templates in headers and bodies, references
 * across steps within CEL's cost budget). This runs the same zod rules `aimesh validate`
 * applies, so `kubectl apply` refuses exactly what `aimesh validate` refuses, with the same
 * field and message. Pure.
 */
import { formatErrors, validateResource } from '../../api/index.js';
import type { AdmissionRequest, Verdict, Webhook } from './review.js';

export const VALIDATION_PATH = '/validate/resources';

export function validationWebhook(): Webhook {
  return (request: AdmissionRequest): Verdict => {
    if (
      request.kind.group !== 'aimesh.io' ||
      (request.operation !== 'CREATE' && request.operation !== 'UPDATE')
    )
      return { outcome: 'ignored' };
    // Status is the operator's to write; only the spec a user sends is checked.
    if (request.subResource) return { outcome: 'ignored' };
    const object = { ...(request.object as Record<string, unknown>), status: undefined };
    const result = validateResource(object);
    if (result.ok) return { outcome: 'allowed' };
    return { outcome: 'denied', denied: formatErrors(result.errors).replaceAll('\n', '; ') };
  };
}
