import { LRUCache } from 'lru-cache';

const ONE = () => 1;

/**
 * An LRU bounded to `entries` whose storage grows with use. lru-cache preallocates its arrays for `max`
 * entries at construction (`Array.from({ length: max })`: ≈ 2 MB of heap and milliseconds of CPU per
 * 100,000, for every such cache of every app instance, used or not); bounding by `maxSize` with a size of
 * 1 per entry evicts at the same count without that. Use it for the large per-process caches.
 */
export function growingLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(
  opts: { entries: number } & Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'>,
): LRUCache<K, V> {
  const { entries, ...rest } = opts;
  return new LRUCache<K, V>({ ...rest, maxSize: entries, sizeCalculation: ONE } as LRUCache.Options<K, V, unknown>);
}
