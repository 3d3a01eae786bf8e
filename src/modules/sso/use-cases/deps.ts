import type { SecretBox } from '../../../platform/crypto/secret-box.ts';
import type { Audit } from '../../audit/index.ts';
import type { Identity } from '../../identity/index.ts';
import type { Tenancy } from '../../tenancy/index.ts';
import type { SsoRepo } from '../sso.repo.ts';

/** Looks up TXT records (node:dns/promises resolveTxt in production; a fake in tests). */
export type TxtResolver = (name: string) => Promise<string[][]>;

export interface SsoSettings {
  /** Base URL the IdPs redirect back to (redirect_uri, ACS, SP entity id). */
  publicUrl: string;
  /** Accepted clock difference with an IdP (SAML NotBefore/NotOnOrAfter, OIDC iat/exp). */
  clockSkewSec: number;
  /** How long a started SP-initiated login may take. */
  loginStateTtlSec: number;
  /** http:// OIDC issuers (development and tests only; production requires https). */
  allowInsecureIssuers: boolean;
  /** Sensitive SSO/policy changes want a second-factor check this recent (users with MFA). */
  stepUpMaxAgeSec: number;
  /** Test seam: how far this server's clock is off (seconds), to present skew to the protocol libraries. */
  clockOffsetSec?: number;
}

export interface SsoUseCaseDeps {
  repo: SsoRepo;
  audit: Audit;
  identity: Pick<Identity, 'findUserByEmail' | 'createExternalUser' | 'startSession' | 'mfaEnabled' | 'assertRecentMfa'>;
  tenancy: Pick<Tenancy, 'provisionMember' | 'invalidateMember'>;
  secrets: SecretBox;
  resolveTxt: TxtResolver;
  settings: SsoSettings;
}
