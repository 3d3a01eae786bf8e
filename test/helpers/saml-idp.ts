import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import { generate } from 'selfsigned';
import { SignedXml } from 'xml-crypto';

/**
 * A SAML IdP for tests: a generated RSA key and self-signed certificate, and responses built and signed
 * here exactly as an IdP does (enveloped XML-DSig over the Assertion, RSA-SHA256, exclusive c14n), so
 * `@node-saml/node-saml` verifies real signatures. Knobs let a test present each attack.
 */
export interface SamlIdp {
  entityId: string;
  ssoUrl: string;
  cert: string;
  privateKey: string;
  response(a: AssertionOptions): string;
}

export interface AssertionOptions {
  email: string;
  audience: string;
  acsUrl: string;
  issuer?: string;
  groups?: string[];
  name?: string;
  inResponseTo?: string;
  assertionId?: string;
  /** Offsets from now, in seconds. */
  notBefore?: number;
  notOnOrAfter?: number;
  /** Sign with this key instead of the IdP's (an attacker's); null = leave the assertion unsigned. */
  signingKey?: string | null;
}

const iso = (offsetSec: number) => new Date(Date.now() + offsetSec * 1000).toISOString();
export const samlId = () => `_${randomBytes(16).toString('hex')}`;
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

export function assertionXml(a: AssertionOptions & { issuer: string }): string {
  const id = a.assertionId ?? samlId();
  const irt = a.inResponseTo ? ` InResponseTo="${esc(a.inResponseTo)}"` : '';
  const groups = (a.groups ?? []).map((g) => `<saml:AttributeValue>${esc(g)}</saml:AttributeValue>`).join('');
  return (
    `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${iso(0)}">` +
    `<saml:Issuer>${esc(a.issuer)}</saml:Issuer>` +
    `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(a.email)}</saml:NameID>` +
    `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${iso(a.notOnOrAfter ?? 300)}" Recipient="${esc(a.acsUrl)}"${irt}/></saml:SubjectConfirmation></saml:Subject>` +
    `<saml:Conditions NotBefore="${iso(a.notBefore ?? -5)}" NotOnOrAfter="${iso(a.notOnOrAfter ?? 300)}"><saml:AudienceRestriction><saml:Audience>${esc(a.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${iso(0)}" SessionIndex="${samlId()}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    `<saml:AttributeStatement><saml:Attribute Name="email"><saml:AttributeValue>${esc(a.email)}</saml:AttributeValue></saml:Attribute>` +
    (a.name ? `<saml:Attribute Name="name"><saml:AttributeValue>${esc(a.name)}</saml:AttributeValue></saml:Attribute>` : '') +
    (groups ? `<saml:Attribute Name="groups">${groups}</saml:Attribute>` : '') +
    `</saml:AttributeStatement></saml:Assertion>`
  );
}

/** Enveloped signature over the (first) Assertion, placed after its Issuer as SAML requires. */
export function signAssertion(xml: string, privateKey: string): string {
  const sig = new SignedXml({
    privateKey,
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  });
  sig.addReference({
    xpath: "//*[local-name(.)='Assertion']",
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
  });
  sig.computeSignature(xml, { location: { reference: "//*[local-name(.)='Assertion']/*[local-name(.)='Issuer']", action: 'after' } });
  return sig.getSignedXml();
}

export function wrapResponse(assertion: string, o: { issuer: string; acsUrl: string; inResponseTo?: string }): string {
  const irt = o.inResponseTo ? ` InResponseTo="${esc(o.inResponseTo)}"` : '';
  return (
    `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${samlId()}" Version="2.0" IssueInstant="${iso(0)}" Destination="${esc(o.acsUrl)}"${irt}>` +
    `<saml:Issuer>${esc(o.issuer)}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>` +
    assertion +
    `</samlp:Response>`
  );
}

export async function createSamlIdp(entityId = 'https://idp.example.test/saml'): Promise<SamlIdp> {
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privateKey = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const pems = await generate([{ name: 'commonName', value: 'test-idp' }], {
    days: 2,
    keyPair: { privateKey, publicKey: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString() },
  } as never);
  return {
    entityId,
    ssoUrl: 'https://idp.example.test/sso',
    cert: pems.cert,
    privateKey,
    response(a) {
      const issuer = a.issuer ?? entityId;
      const unsigned = assertionXml({ ...a, issuer });
      const key = a.signingKey === undefined ? privateKey : a.signingKey;
      const assertion = key === null ? unsigned : signAssertion(unsigned, key);
      return Buffer.from(wrapResponse(assertion, { issuer, acsUrl: a.acsUrl, inResponseTo: a.inResponseTo })).toString('base64');
    },
  };
}

/** Another key (an attacker's), PEM. */
export function otherKey(): string {
  return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** The AuthnRequest ID and RelayState of an SP-initiated redirect (HTTP-Redirect binding: deflate + base64). */
export function readAuthnRequest(location: string): { id: string; relayState: string; xml: string } {
  const url = new URL(location);
  const xml = inflateRawSync(Buffer.from(url.searchParams.get('SAMLRequest')!, 'base64')).toString('utf8');
  return { id: /ID="([^"]+)"/.exec(xml)![1]!, relayState: url.searchParams.get('RelayState')!, xml };
}
