import { describe, expect, it } from 'vitest';
import { createLazyCompilers } from './lazy-compile.ts';

describe('schemas compiled on first use', () => {
  it('builds once, on the first call or by warmUp, whichever comes first', async () => {
    const compilers = createLazyCompilers();
    let builds = 0;
    const a = compilers.lazily(() => (builds++, (x: number) => x + 1));
    const b = compilers.lazily(() => (builds++, (x: number) => x * 2));
    expect(builds).toBe(0);
    expect(a.call(1)).toBe(2);
    expect(a.call(2)).toBe(3);
    expect(builds).toBe(1);
    expect(await compilers.warmUp()).toBe(1); // only b was still pending
    expect(builds).toBe(2);
    expect(b.call(4)).toBe(8);
    expect(builds).toBe(2);
  });

  it('a schema error surfaces on first use (and in warmUp), not silently', async () => {
    const compilers = createLazyCompilers();
    const broken = compilers.lazily<() => void>(() => {
      throw new Error('schema is invalid');
    });
    expect(() => broken.call()).toThrow('schema is invalid');
    const other = createLazyCompilers();
    other.lazily(() => {
      throw new Error('bad serializer schema');
    });
    await expect(other.warmUp()).rejects.toThrow('bad serializer schema');
  });
});
