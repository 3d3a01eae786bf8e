import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';

/**
 * The file storage port (exports now, invoice PDFs later): streamed writes, deletes, and expiring links.
 * Two adapters: the filesystem under the data directory (embedded default; the API serves the download
 * behind an HMAC-signed link) and S3-compatible object storage (multipart upload, presigned GET).
 */
export interface ObjectStorage {
  readonly kind: 'fs' | 's3';
  /**
   * Streams body to key and resolves once the object is complete and visible (bytes written). Nothing is
   * visible under key before that: a failed or aborted write leaves no object (and no partial file).
   */
  put(key: string, body: Readable, opts: PutOptions): Promise<{ bytes: number }>;
  /** Removes the object; a missing one is not an error. */
  delete(key: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** A link that downloads the object until it expires, without any other credential. */
  signedUrl(key: string, opts: LinkOptions): Promise<string>;

  /**
   * Resumable writes, for files built over minutes that must survive the writer's crash (exports): begin →
   * uploadPart (in order) → complete, or abort. Every call takes and returns an {@link UploadState}: plain JSON
   * the caller persists together with its own progress, and hands back after a crash. A part is durable when
   * uploadPart resolves. Uploading again from an older state (the writer died after a part was written but
   * before the new state was saved) replaces whatever was written after that state: no byte is duplicated.
   * Nothing is visible under key before complete. A part may be given as several buffers (written in order):
   * the writer need not copy them into one.
   */
  beginUpload(key: string, opts: PutOptions): Promise<UploadState>;
  uploadPart(state: UploadState, body: Buffer | Buffer[]): Promise<UploadState>;
  completeUpload(state: UploadState): Promise<{ bytes: number }>;
  /** Drops the parts written so far; an unknown or finished upload is not an error. */
  abortUpload(state: UploadState): Promise<void>;
  /** The smallest part uploadPart accepts, except the last (S3: 5 MiB). */
  readonly minPartBytes: number;
}

/** A resumable upload's progress; serializable (the exports runner keeps it in the export's checkpoint). */
export interface UploadState {
  key: string;
  contentType: string;
  /** Bytes in the parts below. */
  bytes: number;
  /** S3: the multipart upload's id. */
  uploadId?: string;
  parts: Array<{ n: number; bytes: number; etag?: string }>;
}

export interface PutOptions {
  contentType: string;
  signal?: AbortSignal;
}

export interface LinkOptions {
  expiresInSec: number;
  /** The file name the browser saves (Content-Disposition: attachment). */
  filename: string;
  contentType: string;
}

export class StorageError extends Error {
  override name = 'StorageError';
}

const KEY = /^[A-Za-z0-9][A-Za-z0-9_.-]*(\/[A-Za-z0-9][A-Za-z0-9_.-]*)*$/;

/** Keys are relative paths of safe segments: no `..`, no leading `/`, no empty segments, bounded. */
export function checkKey(key: string): string {
  if (key.length > 512 || !KEY.test(key) || key.split('/').some((s) => s === '..' || s === '.')) {
    throw new StorageError(`invalid storage key "${key.slice(0, 80)}"`);
  }
  return key;
}

const FILENAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkFilename(name: string): string {
  if (!FILENAME.test(name)) throw new StorageError('invalid download file name');
  return name;
}

/** HMAC-SHA256 over everything the link grants: the key, its expiry, the served name and type. */
export function signLink(secret: Buffer, key: string, expires: number, filename: string, contentType: string): string {
  return createHmac('sha256', secret).update(`${key}\n${expires}\n${filename}\n${contentType}`).digest('base64url');
}

export function verifyLink(
  secret: Buffer,
  link: { key: string; expires: number; filename: string; contentType: string; sig: string },
  now = Date.now(),
): 'ok' | 'expired' | 'bad-signature' {
  const expected = Buffer.from(signLink(secret, link.key, link.expires, link.filename, link.contentType));
  const given = Buffer.from(link.sig);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'bad-signature';
  return link.expires * 1000 < now ? 'expired' : 'ok';
}
