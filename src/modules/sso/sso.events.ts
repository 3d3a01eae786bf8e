/** The sso module publishes no domain events yet: every change is recorded in the audit log. */
export {};
