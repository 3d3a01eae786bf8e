import type { AnyConnector } from '../integrations.connector.ts';
import { httpConnector } from './http.ts';
import { hubspotConnector } from './hubspot.ts';
import { posthogConnector } from './posthog.ts';
import { segmentConnector } from './segment.ts';

/** The connectors this build ships; a new one is a file here plus one line in this list. */
export const SHIPPED_CONNECTORS: readonly AnyConnector[] = [posthogConnector, segmentConnector, hubspotConnector, httpConnector];
