import { Type } from '@sinclair/typebox';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import { UserSchema } from '../identity/index.ts';

/** Roles an IdP may hand out: never owner (owners are made by people, in the app). */
export const SsoRole = Type.Union([Type.Literal('admin'), Type.Literal('member'), Type.Literal('viewer'), Type.Literal('billing')]);
const Url = Type.String({ format: 'uri', maxLength: 2048, pattern: '^https?://' });
const RoleMapping = Type.Record(Type.String({ minLength: 1, maxLength: 256 }), SsoRole, { maxProperties: 100, description: 'IdP group → role' });
const GroupsAttribute = Type.Union([Type.String({ minLength: 1, maxLength: 200 }), Type.Null()], { description: "Claim/attribute carrying the user's groups (default 'groups')" });

export const OidcInput = Type.Object(
  {
    issuer: Url,
    clientId: Type.String({ minLength: 1, maxLength: 255 }),
    clientSecret: Type.Optional(Type.String({ minLength: 1, maxLength: 1000, description: 'Stored encrypted; never returned' })),
  },
  { additionalProperties: false },
);

export const SamlInput = Type.Object(
  {
    idpEntityId: Type.String({ minLength: 1, maxLength: 1024 }),
    idpSsoUrl: Url,
    idpCert: Type.String({ minLength: 100, maxLength: 20_000, description: "The IdP's signing certificate (PEM)" }),
    allowIdpInitiated: Type.Boolean({ default: false }),
  },
  { additionalProperties: false },
);

export const ConnectionCreate = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    defaultRole: SsoRole,
    groupsAttribute: Type.Optional(GroupsAttribute),
    roleMapping: Type.Optional(RoleMapping),
    oidc: Type.Optional(OidcInput),
    saml: Type.Optional(SamlInput),
  },
  { additionalProperties: false },
);

export const ConnectionPatchSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    enabled: Type.Optional(Type.Boolean()),
    defaultRole: Type.Optional(SsoRole),
    groupsAttribute: Type.Optional(GroupsAttribute),
    roleMapping: Type.Optional(RoleMapping),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const ConnectionSchema = Type.Object(
  {
    id: Uuid(),
    protocol: Type.Union([Type.Literal('oidc'), Type.Literal('saml')]),
    name: Type.String(),
    enabled: Type.Boolean(),
    defaultRole: Type.String(),
    groupsAttribute: Type.Union([Type.String(), Type.Null()]),
    roleMapping: Type.Record(Type.String(), Type.String()),
    oidc: Type.Optional(Type.Object({ issuer: Type.String(), clientId: Type.String(), hasClientSecret: Type.Boolean(), redirectUri: Type.String() }, { additionalProperties: false })),
    saml: Type.Optional(
      Type.Object(
        { idpEntityId: Type.String(), idpSsoUrl: Type.String(), idpCert: Type.String(), allowIdpInitiated: Type.Boolean(), spEntityId: Type.String(), acsUrl: Type.String() },
        { additionalProperties: false },
      ),
    ),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);

export const DomainSchema = Type.Object(
  {
    id: Uuid(),
    domain: Type.String(),
    status: Type.Union([Type.Literal('pending'), Type.Literal('verified')]),
    ssoEnforced: Type.Boolean(),
    txtRecord: Type.Object({ name: Type.String(), value: Type.String() }, { additionalProperties: false }),
    verifiedAt: Type.Union([DateTime(), Type.Null()]),
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);

/** Checked in code (verify-domains.ts): a schema pattern this strict defeats the schema-driven fuzz. */
export const DomainName = Type.String({ minLength: 3, maxLength: 253, description: 'e.g. example.com' });

export const SsoLoginSchema = Type.Object(
  {
    token: Type.String(),
    expiresAt: DateTime(),
    user: UserSchema,
    orgId: Uuid(),
    role: Type.String(),
    provisioned: Type.Boolean(),
  },
  { additionalProperties: false },
);

/** Parsed in code (manage-policy.ts: 422 SSO.INVALID_CIDR). */
const Cidr = Type.String({ minLength: 2, maxLength: 43, description: 'IPv4/IPv6 address or CIDR range' });

export const SecurityPolicyInput = Type.Object(
  {
    mfaRequired: Type.Boolean({ description: 'Members must have two-factor authentication to use the org (sessions)' }),
    sessionMaxAgeSec: Type.Union([Type.Integer({ minimum: 300, maximum: 2_592_000 }), Type.Null()], { description: 'Sessions older than this must sign in again' }),
    idleTimeoutSec: Type.Union([Type.Integer({ minimum: 60, maximum: 2_592_000 }), Type.Null()], { description: 'Sessions unused in this org for this long must sign in again' }),
    ipAllowList: Type.Array(Cidr, { maxItems: 100, description: 'Empty: any address. Applies to sessions and API keys' }),
  },
  { additionalProperties: false },
);

export const SecurityPolicySchema = Type.Object(
  {
    mfaRequired: Type.Boolean(),
    sessionMaxAgeSec: Type.Union([Type.Integer(), Type.Null()]),
    idleTimeoutSec: Type.Union([Type.Integer(), Type.Null()]),
    ipAllowList: Type.Array(Type.String()),
    updatedAt: Type.Union([DateTime(), Type.Null()]),
  },
  { additionalProperties: false },
);
