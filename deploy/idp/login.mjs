// The login page of the authorization-code flow: username and password from the clients file.
// There is no consent page: every client in the file is the suite's own (see loadExistingGrant).
// Answers /interaction/:uid (GET: the form) and /interaction/:uid/login (POST).

import { timingSafeEqual, createHash } from 'node:crypto';

const FORM_LIMIT = 16 * 1024;

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(uid, { username = '', error } = {}) {
  return `<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>帮扶 · 登录</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>帮扶 Bangfu · 登录</h1>
${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label>用户名 Username <input name="username" value="${escape(username)}" required autofocus></label>
  <label>密码 Password <input name="password" type="password" required></label>
  <button type="submit">登录 Sign in</button>
</form>
</body></html>
`;
}

// Browsers check a form's redirects against form-action too: the login form's answer ends in a
// redirect to the client's redirect_uri (already checked against its registration), so its
// origin is allowed beside the provider's own.
function send(res, status, html, redirectUri) {
  let formAction = "'self'";
  try {
    if (redirectUri) formAction += ` ${new URL(redirectUri).origin}`;
  } catch {
    // not a URL: only 'self'
  }
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': `default-src 'none'; form-action ${formAction}`,
  });
  res.end(html);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > FORM_LIMIT) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// Compared as digests, so that neither the length nor the content shows in the timing.
function samePassword(given, expected) {
  const digest = (text) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

export async function handleInteraction(provider, people, req, res, pathname) {
  const [, , uid, action] = pathname.split('/');
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    send(res, 400, '<!doctype html><p>This sign-in has expired; start again from the console.</p>');
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, '<!doctype html><p>This sign-in is not the one in progress; start again.</p>');
    return;
  }
  // Asked for explicitly (prompt=consent, which offline_access needs): the grant that
  // loadExistingGrant made from the person's registration is the answer; there is no page.
  if (details.prompt.name === 'consent' && details.grantId) {
    await provider.interactionFinished(req, res, { consent: { grantId: details.grantId } });
    return;
  }
  if (details.prompt.name !== 'login') {
    send(res, 400, `<!doctype html><p>Unexpected step ${escape(details.prompt.name)}.</p>`);
    return;
  }
  const redirectUri = details.params.redirect_uri;
  if (req.method === 'GET' && action === undefined) {
    send(res, 200, page(uid), redirectUri);
    return;
  }
  if (req.method !== 'POST' || action !== 'login') {
    send(res, 405, '<!doctype html><p>Method not allowed.</p>');
    return;
  }
  const form = await readForm(req);
  const username = form.get('username') ?? '';
  const person = people.get(username);
  // A missing person costs the same comparison as a wrong password.
  const ok = samePassword(form.get('password') ?? '', person?.password ?? '\u0000') && person;
  if (!ok) {
    send(
      res,
      401,
      page(uid, { username, error: '用户名或密码错误 Wrong username or password' }),
      redirectUri,
    );
    return;
  }
  await provider.interactionFinished(
    req,
    res,
    { login: { accountId: username } },
    { mergeWithLastSubmission: false },
  );
}
