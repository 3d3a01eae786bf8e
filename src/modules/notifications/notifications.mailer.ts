import type { Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { DestinationPolicy } from '../../platform/resilience/policy.ts';

export interface Mail {
  to: string;
  subject: string;
  text: string;
  /** Lets the provider (and a retried send) deduplicate: the event id that caused the mail. */
  messageId?: string;
  /** The org the mail is sent for: its concurrent sends are capped so one org cannot hold the relay. */
  tenantId?: string | null;
}

/** The e-mail seam: SMTP in production, memory + log for the embedded default and tests. */
export interface Mailer {
  readonly kind: 'smtp' | 'memory';
  send(mail: Mail): Promise<void>;
  close(): Promise<void>;
}

/** Keeps the last mails in memory (read by tests and `plinth` in development); logs recipient and subject only. */
export function createMemoryMailer(logger: Logger, keep = 100): Mailer & { sent: Mail[] } {
  const sent: Mail[] = [];
  return {
    kind: 'memory',
    sent,
    async send(mail) {
      sent.push(mail);
      if (sent.length > keep) sent.shift();
      // The body can carry a one-time link: never logged.
      logger.info({ to: mail.to, subject: mail.subject }, 'mail kept in memory (no SMTP_URL configured)');
    },
    async close() {},
  };
}

/** nodemailer over SMTP_URL, every send through platform.policies.smtp (timeout, retries, breaker, bulkhead). */
export function createSmtpMailer(opts: { url: string; from: string; policy: DestinationPolicy; logger: Logger }): Mailer {
  // nodemailer (≈ 15 MB of RSS) loads with the first mail, not at start.
  let transport: Promise<Transporter> | undefined;
  const transporter = () => (transport ??= import('nodemailer').then((m) => m.default.createTransport(opts.url)));
  const relay = new URL(opts.url).host;
  return {
    kind: 'smtp',
    async send(mail) {
      await opts.policy.execute({ destination: relay, tenantId: mail.tenantId }, async () => {
        await (await transporter()).sendMail({
          from: opts.from,
          to: mail.to,
          subject: mail.subject,
          text: mail.text,
          ...(mail.messageId ? { messageId: `<${mail.messageId}@plinth>` } : {}),
        });
      });
      opts.logger.info({ to: mail.to, subject: mail.subject }, 'mail sent');
    },
    async close() {
      (await transport)?.close();
    },
  };
}

export function createMailer(opts: { smtpUrl?: string; from: string; policy: DestinationPolicy; logger: Logger }): Mailer {
  return opts.smtpUrl ? createSmtpMailer({ url: opts.smtpUrl, from: opts.from, policy: opts.policy, logger: opts.logger }) : createMemoryMailer(opts.logger);
}
