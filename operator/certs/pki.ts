/**
 * The admission server's certificates: a private CA and a serving certificate it signs,
 * made with @peculiar/x509 over Node's WebCrypto (no openssl), and the pure decision of
 * what to renew. The CA lives long and is trusted through the webhook configuration's
 * caBundle; the serving certificate is short-lived and renewed with no restart, because
 * a new one signed by the same CA needs no caBundle change.
 */
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect
// metadata API loaded before it.
import 'reflect-metadata';
import { X509Certificate as NodeCertificate, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// @peculiar/x509 is typed against the DOM's WebCrypto, which Node's is (without the DOM types).
x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const HOUR_MS = 3_600_000;

/** PEM text of one certificate and its private key (PKCS #8). */
export interface KeyPair {
  cert: string;
  key: string;
}

export interface CertificateBundle {
  ca: KeyPair;
  serving: KeyPair;
}

export interface Lifetimes {
  caHours: number;
  servingHours: number;
}

/** Ten years for the CA, ninety days for the serving certificate (renewed after sixty). */
export const DEFAULT_LIFETIMES: Lifetimes = { caHours: 24 * 3650, servingHours: 24 * 90 };

/** What the stored certificates are, as far as renewal is concerned. */
export interface StoredState {
  ca?: { notBefore: number; notAfter: number };
  serving?: { notBefore: number; notAfter: number; names: string[]; signedByCa: boolean };
}

export type CertificateAction =
  { action: 'keep' } | { action: 'issue-serving'; reason: string } | { action: 'new-ca'; reason: string };

/**
 * What to do with the stored certificates. A certificate is renewed once two thirds of its
 * lifetime have passed (as cert-manager does by default), so there is always a third of
 * it left to retry in; a serving certificate that does not name every host the API server
 * dials, or that the CA did not sign, is replaced at once. Pure.
 */
export function certificateAction(
  state: StoredState,
  wantedNames: readonly string[],
  now: number,
): CertificateAction {
  const due = (c: { notBefore: number; notAfter: number }) =>
    now >= c.notAfter - (c.notAfter - c.notBefore) / 3 || now < c.notBefore;
  if (!state.ca) return { action: 'new-ca', reason: 'there is no CA yet' };
  if (due(state.ca)) return { action: 'new-ca', reason: 'the CA is due for renewal' };
  const serving = state.serving;
  if (!serving) return { action: 'issue-serving', reason: 'there is no serving certificate yet' };
  if (!serving.signedByCa)
    return { action: 'issue-serving', reason: 'the serving certificate is not signed by the CA' };
  const missing = wantedNames.filter((n) => !serving.names.includes(n));
  if (missing.length > 0)
    return { action: 'issue-serving', reason: `the serving certificate does not name ${missing.join(', ')}` };
  if (now >= serving.notAfter)
    return { action: 'issue-serving', reason: 'the serving certificate has expired' };
  if (due(serving)) return { action: 'issue-serving', reason: 'the serving certificate is due for renewal' };
  return { action: 'keep' };
}

/** Reads stored PEM into the facts certificateAction needs; anything unreadable is absent. */
export function storedState(stored: Partial<CertificateBundle>): StoredState {
  const state: StoredState = {};
  const ca = parse(stored.ca?.cert);
  if (!ca || !stored.ca?.key) return state;
  state.ca = { notBefore: Date.parse(ca.validFrom), notAfter: Date.parse(ca.validTo) };
  const serving = parse(stored.serving?.cert);
  if (!serving || !stored.serving?.key) return state;
  state.serving = {
    notBefore: Date.parse(serving.validFrom),
    notAfter: Date.parse(serving.validTo),
    names: (serving.subjectAltName ?? '')
      .split(', ')
      .map((entry) => entry.replace(/^(DNS|IP Address):/, ''))
      .filter(Boolean),
    signedByCa: serving.checkIssued(ca) && serving.verify(ca.publicKey),
  };
  return state;
}

/** A new self-signed CA that may sign serving certificates only (path length 0). */
export async function createCa(now: number, lifetimes: Lifetimes = DEFAULT_LIFETIMES): Promise<KeyPair> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=aimesh admission CA',
    notBefore: new Date(now - HOUR_MS), // tolerate clocks a little behind ours
    notAfter: new Date(now + lifetimes.caHours * HOUR_MS),
    signingAlgorithm: ALGORITHM,
    keys: keys as never,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
    ],
  });
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) };
}

/** A serving certificate for these DNS names and IP addresses, signed by the CA. */
export async function issueServing(
  ca: KeyPair,
  names: readonly string[],
  now: number,
  lifetimes: Lifetimes = DEFAULT_LIFETIMES,
): Promise<KeyPair> {
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(ca.key),
    ALGORITHM,
    false,
    ['sign'],
  );
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const notAfter = Math.min(now + lifetimes.servingHours * HOUR_MS, caCert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${names[0] ?? 'aimesh-webhook'}`,
    issuer: caCert.subject,
    notBefore: new Date(now - HOUR_MS),
    notAfter: new Date(notAfter),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey as never,
    signingKey: caKey as never,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        names.map((value) => ({ type: isIpAddress(value) ? 'ip' : 'dns', value })),
      ),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) };
}

function parse(pem: string | undefined): NodeCertificate | undefined {
  if (!pem) return undefined;
  try {
    return new NodeCertificate(pem);
  } catch {
    return undefined;
  }
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

/** A positive 128-bit serial number, as RFC 5280 asks for (unpredictable, at most 20 octets). */
function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

function isIpAddress(value: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(value) || value.includes(':');
}
