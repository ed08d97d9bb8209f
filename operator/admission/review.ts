/**
 * AdmissionReview (admission.k8s.io/v1) as the API server sends it and as a webhook
 * answers, and the pure step from a webhook's verdict to the answer.
 */
import type { JsonPatchAdd } from '../../render/index.js';

export interface AdmissionRequest {
  uid: string;
  kind: { group: string; version: string; kind: string };
  resource?: { group: string; version: string; resource: string };
  subResource?: string;
  namespace?: string;
  name?: string;
  operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  object?: unknown;
  dryRun?: boolean;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: 'JSONPatch';
  /** base64 of the JSON patch. */
  patch?: string;
  warnings?: string[];
  /** Why the request is refused, when `allowed` is false: kubectl prints the message. */
  status?: { code: number; reason: string; message: string };
}

export interface AdmissionReview {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  request?: AdmissionRequest;
  response?: AdmissionResponse;
}

/** What a webhook decided about one request; `outcome` feeds metrics and logs. */
export interface Verdict {
  outcome: string;
  /** Set when the request must be refused (a validating webhook): the message users see. */
  denied?: string;
  patch?: JsonPatchAdd[];
  warnings?: string[];
}

/** One webhook: a request in, a verdict out, synchronously (it must answer in milliseconds). */
export type Webhook = (request: AdmissionRequest) => Verdict;

/**
 * The API server shows warnings to the client as they are, but may cut each one at 120
 * characters, so every warning leads with what matters and carries the aimesh prefix.
 */
export function admissionResponse(uid: string, verdict: Verdict): AdmissionReview {
  const warnings = (verdict.warnings ?? []).map((w) => `aimesh: ${w}`);
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: {
      uid,
      allowed: verdict.denied === undefined,
      ...(verdict.denied === undefined
        ? {}
        : { status: { code: 422, reason: 'Invalid', message: verdict.denied } }),
      ...(verdict.patch && verdict.patch.length > 0
        ? {
            patchType: 'JSONPatch' as const,
            patch: Buffer.from(JSON.stringify(verdict.patch)).toString('base64'),
          }
        : {}),
      ...(warnings.length > 0 ? { warnings } : {}),
    },
  };
}
