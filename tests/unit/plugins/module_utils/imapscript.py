# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A scripted, misbehaving IMAP server for the unit tests: a socketserver on 127.0.0.1 that keeps
mailboxes, quotas and ACLs the way Cyrus does (an administrator needs the x right to DELETE), and
answers NO, BAD, drops the connection, or SIGKILLs the client at a chosen command."""

from __future__ import annotations

import base64
import os
import re
import signal
import socketserver
import threading

TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\(([^)]*)\)|(\S+)')


def tokens(text: str) -> list:
    """IMAP arguments: quoted strings unquoted, parenthesised lists kept whole, atoms as they are."""
    out = []
    for match in TOKEN.finditer(text):
        if match.group(1) is not None:
            out.append(re.sub(r'\\(.)', r'\1', match.group(1)))
        elif match.group(2) is not None:
            out.append('(%s)' % match.group(2))
        else:
            out.append(match.group(3))
    return out


class Script:
    """What the server holds and how it misbehaves. ``fail`` maps a command (CREATE, SETQUOTA, SETACL,
    DELETE, DELETEACL, MYRIGHTS, GETACL, LIST, LOGIN, AUTHENTICATE...) to NO, BAD, drop or kill."""

    def __init__(self, users=None, boxes=None, fail=None, capabilities='IMAP4rev1 AUTH=PLAIN QUOTA ACL'):
        self.users = dict(users or {'cyrus': 'secret'})
        self.boxes = dict(boxes or {})      # name -> {'quota': KiB or None, 'acl': {who: rights}}
        self.fail = dict(fail or {})
        self.capabilities = capabilities
        self.implied_rights = 'la'          # what MYRIGHTS adds to the ACL entry (a server may claim more)
        self.log = []
        self.client_pid = None
        self.lock = threading.Lock()


class Handler(socketserver.StreamRequestHandler):
    def send(self, line: str) -> None:
        self.wfile.write(line.encode('utf-8') + b'\r\n')

    def handle(self) -> None:
        script = self.server.script
        self.user = None
        self.send('* OK fake IMAP ready')
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode('utf-8', 'replace').rstrip('\r\n')
            parts = line.split(' ', 2)
            if len(parts) < 2:
                self.send('* BAD no tag')
                continue
            tag, command, rest = parts[0], parts[1].upper(), parts[2] if len(parts) > 2 else ''
            with script.lock:
                script.log.append((command, rest))
                failure = script.fail.get(command)
            if failure == 'kill' and script.client_pid:
                os.kill(script.client_pid, signal.SIGKILL)
                return
            if failure == 'drop':
                return
            if failure in ('NO', 'BAD'):
                self.send(f'{tag} {failure} scripted {command} refusal')
                continue
            if not self.answer(tag, command, tokens(rest)):
                return

    def answer(self, tag, command, args) -> bool:
        script = self.server.script
        boxes = script.boxes
        ok = f'{tag} OK {command} done'
        if command == 'CAPABILITY':
            self.send(f'* CAPABILITY {script.capabilities}')
        elif command == 'LOGIN':
            if script.users.get(args[0]) != (args[1] if len(args) > 1 else None):
                self.send(f'{tag} NO Login failed')
                return True
            self.user = args[0]
        elif command == 'AUTHENTICATE':
            self.send('+ ')
            data = base64.b64decode(self.rfile.readline().strip() or b'=')
            dummy, user, password = data.split(b'\0')
            if script.users.get(user.decode('utf-8')) != password.decode('utf-8'):
                self.send(f'{tag} NO Login failed')
                return True
            self.user = user.decode('utf-8')
        elif command == 'LOGOUT':
            self.send('* BYE bye')
            self.send(ok)
            return False
        elif command == 'LIST':
            if args[1] in boxes:
                self.send(f'* LIST (\\HasNoChildren) "." "{args[1]}"')
        elif command == 'GETQUOTAROOT':
            box = boxes.get(args[0])
            if box is None:
                self.send(f'{tag} NO Mailbox does not exist')
                return True
            if box['quota'] is None:
                self.send(f'* QUOTAROOT "{args[0]}"')
            else:
                self.send(f'* QUOTAROOT "{args[0]}" {args[0]}')
                self.send(f'* QUOTA {args[0]} (STORAGE 0 {box["quota"]})')
        elif command == 'CREATE':
            if args[0] in boxes or (len(args) > 1 and args[1] != 'default'):
                self.send(f'{tag} NO cannot create')
                return True
            boxes[args[0]] = {'quota': None, 'acl': {}}
        elif command == 'SETQUOTA':
            limit = re.search(r'STORAGE (\d+)', args[1])
            boxes[args[0]]['quota'] = int(limit.group(1)) if limit else None
        elif command == 'MYRIGHTS':
            rights = boxes[args[0]]['acl'].get(self.user, '')
            self.send(f'* MYRIGHTS "{args[0]}" {"".join(sorted(set(rights + script.implied_rights)))}')
        elif command == 'GETACL':
            acl = ' '.join(f'{who} {rights}' for who, rights in boxes[args[0]]['acl'].items())
            self.send(f'* ACL "{args[0]}" {acl}'.rstrip())
        elif command == 'SETACL':
            boxes[args[0]]['acl'][args[1]] = args[2]
        elif command == 'DELETEACL':
            boxes[args[0]]['acl'].pop(args[1], None)
        elif command == 'DELETE':
            if 'x' not in boxes.get(args[0], {}).get('acl', {}).get(self.user, ''):
                self.send(f'{tag} NO Permission denied')
                return True
            del boxes[args[0]]
        elif command == 'SELECT' or command == 'EXAMINE':
            self.send('* 0 EXISTS')
        else:
            self.send(f'{tag} BAD unknown command')
            return True
        self.send(ok)
        return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Script):
        super().__init__(('127.0.0.1', 0), Handler)
        self.script = script

    def __enter__(self):
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    @property
    def port(self) -> int:
        return self.server_address[1]
