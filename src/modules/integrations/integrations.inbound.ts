import { createSecretBox } from '../../platform/crypto/secret-box.ts';
import { CREDENTIALS_PURPOSE } from './integrations.connector.ts';
import { AppError } from '../../platform/http/errors.ts';
import type { DbScope } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { AnyConnector, InboundRequest } from './integrations.connector.ts';
import { connectionNotFound } from './integrations.errors.ts';
import { INBOUND_EVENT, INBOUND_RECEIVED, type InboundEventPayload, type InboundReceivedPayload } from './integrations.events.ts';
import * as repo from './integrations.repo.ts';
import type { IntegrationsTables, Trx } from './integrations.repo.ts';

export interface InboundDeps {
  scope: DbScope<IntegrationsTables>;
  events: EventPublisher;
  connectors: ReadonlyMap<string, AnyConnector>;
  secretKey: Buffer;
}

export interface Inbound {
  /** Verify → store (deduplicated) → one processing request per new event, in one transaction. */
  receive(tenantId: string, connectionId: string, req: InboundRequest, body: unknown): Promise<{ received: number; duplicates: number }>;
  /** The processor (job handler): marks the inbox row processed and publishes `integrations.inbound_event`. */
  process(trx: Trx, tenantId: string, inboxId: string): Promise<void>;
}

const badSignature = () => new AppError('INTEGRATIONS.BAD_SIGNATURE', 401, 'The webhook signature is missing, invalid or too old');

export function createInbound(deps: InboundDeps): Inbound {
  return {
    async receive(tenantId, connectionId, req, body) {
      return deps.scope.withTenant(tenantId, async (trx) => {
        const conn = await repo.findConnection(trx, tenantId, connectionId);
        const inbound = conn && conn.active ? deps.connectors.get(conn.connector)?.inbound : undefined;
        // Unknown, inactive, or a connector without inbound webhooks: the same 404 (nothing to probe).
        if (!conn || !inbound) throw connectionNotFound();
        const credentials = JSON.parse(createSecretBox(deps.secretKey, CREDENTIALS_PURPOSE).open((await repo.credentialsOf(trx, tenantId, connectionId))!));
        if (!inbound.verify(credentials, req)) throw badSignature();
        const events = inbound.split(body);
        const ids = await repo.insertInbox(trx, tenantId, connectionId, events.map((e) => ({ ...e, id: newId() })));
        for (const inboxId of ids) await deps.events.add(trx, { name: INBOUND_RECEIVED, tenantId, payload: { inboxId } satisfies InboundReceivedPayload });
        return { received: ids.length, duplicates: events.length - ids.length };
      });
    },

    async process(trx, tenantId, inboxId) {
      const row = await repo.claimInbox(trx, tenantId, inboxId);
      if (!row) return;
      const conn = await repo.findConnection(trx, tenantId, row.connectionId);
      if (!conn) return;
      const payload: InboundEventPayload = { connector: conn.connector, connectionId: conn.id, type: row.type, payload: row.payload };
      await deps.events.add(trx, { name: INBOUND_EVENT, tenantId, payload });
    },
  };
}
