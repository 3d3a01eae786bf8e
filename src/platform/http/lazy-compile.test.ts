import { describe, expect, it } from 'vitest';
import { lazily, warmUp } from './lazy-compile.ts';

describe('schemas compiled on first use', () => {
  it('builds once, on the first call or by warmUp, whichever comes first', async () => {
    let builds = 0;
    const a = lazily(() => (builds++, (x: number) => x + 1));
    const b = lazily(() => (builds++, (x: number) => x * 2));
    expect(builds).toBe(0);
    expect(a.call(1)).toBe(2);
    expect(a.call(2)).toBe(3);
    expect(builds).toBe(1);
    expect(await warmUp()).toBeGreaterThanOrEqual(1); // b (and whatever else is pending in this process)
    expect(builds).toBe(2);
    expect(b.call(4)).toBe(8);
    expect(builds).toBe(2);
  });

  it('a schema error surfaces on first use (and in warmUp), not silently', () => {
    const broken = lazily<() => void>(() => {
      throw new Error('schema is invalid');
    });
    expect(() => broken.call()).toThrow('schema is invalid');
  });
});
