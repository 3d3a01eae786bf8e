/**
 * The baselines Plinth's scenarios are measured against, each run as its own minimal process:
 *   hello   bare Fastify, GET / → {"hello":"world"}
 *   select  naive Fastify route: one `SELECT … WHERE id = $1` by primary key with pg (pool of 10)
 *   insert  naive Fastify route: one single-row `INSERT … RETURNING` with pg (pool of 10)
 * No validation, auth, tenant context, logging or transactions: the cost floor of "Fastify + pg".
 * Usage: node --import tsx bench/baselines/server.ts <mode>   (PORT, DATABASE_URL from the environment)
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import pg from 'pg';

const mode = process.argv[2];
const port = Number(process.env.PORT ?? 0);
const app = Fastify({ logger: false });
app.get('/livez', async () => ({ status: 'ok' }));

if (mode === 'hello') {
  app.get('/', async () => ({ hello: 'world' }));
} else if (mode === 'select' || mode === 'insert') {
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DATABASE_POOL_MAX ?? 10) });
  pool.on('error', () => {});
  app.get<{ Params: { id: string } }>('/items/:id', async (req, reply) => {
    const { rows } = await pool.query('select id, title, status, created_at from bench_items where id = $1', [Number(req.params.id)]);
    if (rows.length === 0) return reply.code(404).send({ error: 'not found' });
    return rows[0];
  });
  app.post<{ Body: { title: string } }>('/items', async (req, reply) => {
    const { rows } = await pool.query(
      'insert into bench_inserts (id, title, status) values ($1, $2, $3) returning id, title, status, created_at',
      [randomUUID(), String(req.body?.title ?? ''), 'todo'],
    );
    return reply.code(201).send(rows[0]);
  });
  app.addHook('onClose', async () => pool.end());
} else {
  console.error('usage: server.ts hello|select|insert');
  process.exit(2);
}

await app.listen({ port, host: '127.0.0.1' });
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
