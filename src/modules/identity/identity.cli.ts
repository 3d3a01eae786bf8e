/** `plinth admin grant|revoke <email>`: platform administrators may call PLATFORM_ADMIN routes. */
export async function runAdminCommand(
  identity: { setPlatformAdmin(email: string, value: boolean): Promise<{ email: string; isPlatformAdmin: boolean }> },
  args: string[],
  out: (line: string) => void = console.log,
): Promise<number> {
  const [sub, email] = args;
  if ((sub !== 'grant' && sub !== 'revoke') || !email) {
    out('usage: plinth admin grant|revoke <email>');
    return 2;
  }
  try {
    const user = await identity.setPlatformAdmin(email, sub === 'grant');
    out(`${user.email} is ${user.isPlatformAdmin ? 'now' : 'no longer'} a platform administrator`);
    return 0;
  } catch (err) {
    if ((err as { code?: string }).code === 'IDENTITY.USER_NOT_FOUND') {
      out(`no user with email ${email}`);
      return 1;
    }
    throw err;
  }
}
