import { prepareTestTemplate } from '../../src/platform/testing/test-db.ts';

/**
 * Runs once per `vitest run`, before any test file: migrates the template database every test file
 * copies, so parallel workers do not each build it (see createTestDatabase).
 */
export async function setup(): Promise<void> {
  await prepareTestTemplate();
}
