import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

/**
 * A software WebAuthn authenticator for tests: real ES256 (P-256) key pairs from node:crypto, real CBOR
 * (a minimal encoder written here, independent of the library under test), real authenticator data and
 * signatures — so the server's @simplewebauthn/server verifies them exactly as it would a browser's.
 * It answers the JSON options the server hands out with the JSON `PublicKeyCredential.toJSON()` gives.
 */

// ── CBOR (RFC 8949), the subset WebAuthn uses: unsigned/negative integers, byte and text strings, arrays, maps ──
type Cbor = number | string | Uint8Array | Cbor[] | Map<number | string, Cbor>;

function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

export function cbor(v: Cbor): Buffer {
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([head(3, b.length), b]);
  }
  if (v instanceof Uint8Array) return Buffer.concat([head(2, v.length), Buffer.from(v)]);
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map(cbor)]);
  return Buffer.concat([head(5, v.size), ...[...v.entries()].flatMap(([k, x]) => [cbor(k), cbor(x)])]);
}

const b64u = (b: Uint8Array | string) => Buffer.from(b).toString('base64url');
const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest();

/** Authenticator data flags (WebAuthn §6.1). */
export const FLAGS = { UP: 0x01, UV: 0x04, BE: 0x08, BS: 0x10, AT: 0x40 } as const;

interface SoftCredential {
  id: Buffer;
  privateKey: KeyObject;
  cosePublicKey: Buffer;
  rpId: string;
  userHandle: string | null;
  counter: number;
}

export interface CreationOptionsJSON {
  challenge: string;
  rp: { id?: string; name: string };
  user: { id: string; name: string; displayName: string };
  excludeCredentials?: { id: string }[];
  [k: string]: unknown;
}

export interface RequestOptionsJSON {
  challenge: string;
  rpId?: string;
  allowCredentials?: { id: string }[];
  [k: string]: unknown;
}

export interface CreateOpts {
  origin: string;
  /** Attestation format: `none`, or `packed` self-attestation signed by the credential key. */
  fmt?: 'none' | 'packed';
  /** Sign for another RP id than the options name (an attack). */
  rpId?: string;
  /** Discoverable (resident) credential: the authenticator keeps the user handle. Default true. */
  discoverable?: boolean;
  flags?: number;
  /** Start the signature counter here (0: an authenticator that keeps none). */
  counter?: number;
}

export interface GetOpts {
  origin: string;
  /** Which credential (default: the first one allowed, or the first for the RP when none are listed). */
  credentialId?: string;
  rpId?: string;
  flags?: number;
  /** Report this counter instead of the next one (a cloned authenticator). */
  counter?: number;
  /** Replace the challenge the options carry. */
  challenge?: string;
  /** Flip a bit of the signature. */
  tamperSignature?: boolean;
}

export function createSoftAuthenticator() {
  const credentials: SoftCredential[] = [];
  const aaguid = Buffer.alloc(16, 0);

  function authData(rpId: string, flags: number, counter: number, attested?: SoftCredential): Buffer {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter >>> 0);
    const parts: Buffer[] = [sha256(rpId), Buffer.from([flags]), c];
    if (attested) {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(attested.id.length);
      parts.push(aaguid, len, attested.id, attested.cosePublicKey);
    }
    return Buffer.concat(parts);
  }

  const clientData = (type: string, challenge: string, origin: string) => Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }));

  return {
    credentials,

    /** navigator.credentials.create(): a new ES256 credential and its attestation (RegistrationResponseJSON). */
    create(options: CreationOptionsJSON, opts: CreateOpts) {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const jwk = publicKey.export({ format: 'jwk' });
      // COSE_Key (RFC 9053): kty EC2, alg ES256, crv P-256, x, y
      const cosePublicKey = cbor(new Map<number, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x!, 'base64url')], [-3, Buffer.from(jwk.y!, 'base64url')]]));
      const rpId = opts.rpId ?? options.rp.id!;
      const cred: SoftCredential = { id: randomBytes(32), privateKey, cosePublicKey, rpId: options.rp.id!, userHandle: opts.discoverable === false ? null : options.user.id, counter: opts.counter ?? 0 };
      const data = authData(rpId, opts.flags ?? FLAGS.UP | FLAGS.UV | FLAGS.AT, cred.counter, cred);
      const cdj = clientData('webauthn.create', options.challenge, opts.origin);
      const fmt = opts.fmt ?? 'none';
      const attStmt =
        fmt === 'packed' ? new Map<string, Cbor>([['alg', -7], ['sig', sign('sha256', Buffer.concat([data, sha256(cdj)]), privateKey)]]) : new Map<string, Cbor>();
      const attestationObject = cbor(new Map<string, Cbor>([['fmt', fmt], ['attStmt', attStmt], ['authData', data]]));
      credentials.push(cred);
      return {
        id: b64u(cred.id),
        rawId: b64u(cred.id),
        type: 'public-key' as const,
        response: { clientDataJSON: b64u(cdj), attestationObject: b64u(attestationObject), transports: ['internal', 'hybrid'] },
        authenticatorAttachment: 'platform',
        clientExtensionResults: {},
      };
    },

    /** navigator.credentials.get(): an assertion (AuthenticationResponseJSON) with the counter moved on by one. */
    get(options: RequestOptionsJSON, opts: GetOpts) {
      const allowed = new Set((options.allowCredentials ?? []).map((c) => c.id));
      const cred = opts.credentialId
        ? credentials.find((c) => b64u(c.id) === opts.credentialId)
        : credentials.find((c) => (allowed.size > 0 ? allowed.has(b64u(c.id)) : c.rpId === options.rpId && c.userHandle !== null));
      if (!cred) throw new Error('soft authenticator: no matching credential');
      const counter = opts.counter ?? (cred.counter += 1);
      const data = authData(opts.rpId ?? options.rpId ?? cred.rpId, opts.flags ?? FLAGS.UP | FLAGS.UV, counter);
      const cdj = clientData('webauthn.get', opts.challenge ?? options.challenge, opts.origin);
      const signature = sign('sha256', Buffer.concat([data, sha256(cdj)]), cred.privateKey);
      if (opts.tamperSignature) signature[10] = signature[10]! ^ 0x01;
      return {
        id: b64u(cred.id),
        rawId: b64u(cred.id),
        type: 'public-key' as const,
        response: {
          clientDataJSON: b64u(cdj),
          authenticatorData: b64u(data),
          signature: b64u(signature),
          ...(cred.userHandle ? { userHandle: cred.userHandle } : {}),
        },
        clientExtensionResults: {},
      };
    },
  };
}

export type SoftAuthenticator = ReturnType<typeof createSoftAuthenticator>;
