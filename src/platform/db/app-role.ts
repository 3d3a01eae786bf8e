import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { sql, type QueryExecutorProvider } from 'kysely';
import { APP_ROLE, type Database } from './database.ts';
import { DatabaseConnectError, isLoginRefused } from './unavailable.ts';

/**
 * A SCRAM-SHA-256 verifier for a password (RFC 5802/7677, the format Postgres stores): the cleartext never
 * reaches the server, so it cannot end up in a statement log. As psql's \password does.
 */
export function scramVerifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** Gives the app role a password (as the owner, which created it). The role is cluster-wide. */
export async function setAppPassword(owner: QueryExecutorProvider, password: string): Promise<void> {
  if (password.length < 16) throw new Error('the plinth_app password must be at least 16 characters');
  await sql.raw(`alter role ${APP_ROLE} with login password '${scramVerifier(password)}'`).execute(owner);
}

/**
 * Checked at start: a wrong app-role login would otherwise pass the migration check (the owner's login)
 * and then fail every request. Refusing to start with one line is clearer than running never-ready.
 */
export async function checkAppLogin(db: Database): Promise<void> {
  try {
    await db.ping();
  } catch (err) {
    if (isLoginRefused(err)) {
      throw new DatabaseConnectError(
        `PostgreSQL refused the ${APP_ROLE} login: ${(err as Error).message} (set its password with \`plinth db set-app-password\`; see docs/production.md)`,
      );
    }
    throw err;
  }
}
