import { describe, expect, it } from 'vitest';
import { growingLru } from './lru.ts';

describe('growingLru', () => {
  it('evicts the least recently used entry at its bound, as max would', () => {
    const lru = growingLru<string, number>({ entries: 3 });
    lru.set('a', 1).set('b', 2).set('c', 3);
    lru.get('a');
    lru.set('d', 4);
    expect([...lru.keys()].sort()).toEqual(['a', 'c', 'd']);
    expect(lru.size).toBe(3);
  });

  it('keeps ttl semantics', async () => {
    const lru = growingLru<string, number>({ entries: 10, ttl: 40 });
    lru.set('a', 1);
    expect(lru.get('a')).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(lru.get('a')).toBeUndefined();
  });
});
