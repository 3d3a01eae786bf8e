import { Type } from '@sinclair/typebox';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import { PASSWORD_MAX } from './identity.passwords.ts';

export const UserSchema = Type.Object(
  {
    id: Uuid(),
    email: Type.String({ format: 'email' }),
    name: Type.String(),
    isPlatformAdmin: Type.Boolean(),
    disabled: Type.Boolean(),
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);

export const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 });
/** The policy (8–128, not common) is checked in code for a precise 422; the schema bounds the body. */
export const Password = Type.String({ minLength: 1, maxLength: PASSWORD_MAX * 4, description: '8–128 characters, not a common password' });
export const PersonName = Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' });

export const SessionTokenSchema = Type.Object(
  {
    token: Type.String({ description: 'Bearer token; shown only here' }),
    expiresAt: DateTime(),
  },
  { additionalProperties: false },
);

export const SessionSchema = Type.Object(
  {
    id: Uuid(),
    ip: Type.Union([Type.String(), Type.Null()]),
    userAgent: Type.Union([Type.String(), Type.Null()]),
    createdAt: DateTime(),
    lastUsedAt: DateTime(),
    expiresAt: DateTime(),
    current: Type.Boolean(),
  },
  { additionalProperties: false },
);
