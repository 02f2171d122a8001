# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_portsentinel_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_portsentinel_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_portsentinel_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_portsentinel_using_subcommand
    set -l cmd (__fish_portsentinel_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c portsentinel -n "__fish_portsentinel_needs_command" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -s h -l help -d 'Print help'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "run" -d 'Run the daemon in the foreground: watch listeners, record every change, alert'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "scan" -d 'List what listens now, with IANA status, port range, owner and verdict'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "explain" -d 'Explain a port: IANA status and service names, range, and what the policy says'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "notify-agent" -d 'Show desktop notifications for the daemon\'s alerts (run as the desktop user)'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "baseline" -d 'Print the listeners present now as [[allow]] entries: a baseline to allow'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "history" -d 'Review the journal: one line per listener life, from the daemon\'s own records'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "check-config" -d 'Validate a config file and exit'
complete -c portsentinel -n "__fish_portsentinel_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -s c -l config -d 'Config file [default: /etc/portsentinel/config.toml if it exists, else built-in defaults]' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -l interval -d 'Time between two looks at the socket table, e.g. 200ms, 1s (at least 100ms) [default: daemon.interval from the config, else 1s]' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -l log -d 'Where records go [default: daemon.log from the config, else auto]' -r -f -a "auto\t'journald when started by systemd ($JOURNAL_STREAM is set), text otherwise'
journald\t'Native journald records with structured fields'
text\t'One `key=value` line per record on stderr'
json\t'One JSON object per line on stderr, with journald\'s field names'"
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -l namespaces -d 'Which network namespaces to watch: `all`, or `host` (the daemon\'s own only) [default: daemon.namespaces from the config, else all]' -r -f -a "all\t'Every namespace on the machine'
host\t'The daemon\'s own only'"
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -l instant -d 'Instant detection: `auto` (the kernel\'s listen and bind events, where the daemon may load eBPF) or `off` (polls alone) [default: daemon.instant from the config, else auto]' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand run" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -l source -d 'Where to read sockets from' -r -f -a "auto\t'sock_diag, falling back to /proc/net while sock_diag fails'
sock-diag\t'sock_diag only: fail when it fails'
proc-net\t'/proc/net only (slower, and IPV6_V6ONLY is unknown)'"
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -l netns -d 'Which network namespaces: `all` (every one on the machine), `host` (this one), or one by name (an `ip netns` name, a container\'s network, or `netns:INODE`)' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -s c -l config -d 'Config file [default: /etc/portsentinel/config.toml if it exists, else built-in defaults]' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -l json -d 'Print one JSON array instead of a table (fields: see the README)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -l all -d 'One row per socket instead of one per program, address and port'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -l check -d 'Exit with status 1 when any listener is alerted (for scripts and monitoring)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -l all-holders -d 'Read every process\'s open files to the end, as `ss -p` does: list every pid that holds each socket, and judge each listener as each program that holds it (as the daemon does once a minute). Without it, the first holder found names a socket'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand scan" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -l netns -d 'Which network namespaces: `all` (every one on the machine), `host` (this one), or one by name (an `ip netns` name, a container\'s network, or `netns:INODE`)' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -s c -l config -d 'Config file [default: /etc/portsentinel/config.toml if it exists, else built-in defaults]' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -l json -d 'Print JSON instead of text'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand explain" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -l socket -d 'The daemon\'s event socket [default: [events] socket from the config, else /run/portsentinel/events.sock]' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -l burst-window -d 'Alerts closer together than this are folded into one summary notification [default: [notify] burst_window from the config, else 2s]' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -s c -l config -d 'Config file [default: /etc/portsentinel/config.toml if it exists, else built-in defaults]' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand notify-agent" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -l until -d 'Write `until = TIME` on every entry (RFC 3339, e.g. 2026-12-31T18:00:00Z): the rules stop matching then' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -l netns -d 'Which network namespaces: `all` (every one on the machine), `host` (this one), or one by name (an `ip netns` name, a container\'s network, or `netns:INODE`)' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -s c -l config -d 'Config file [default: /etc/portsentinel/config.toml if it exists, else built-in defaults]' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand baseline" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s S -l since -d 'From this time on, in journalctl\'s forms: "2026-12-01 10:00", "yesterday", "-2h"' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s U -l until -d 'Up to this time, in the same forms' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l port -d 'Only listeners on this port' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l exe -d 'Only listeners of this program (its executable\'s path)' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s b -l boot -d 'Only this boot: the current one without a value, or an offset (-1) or boot id' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s D -l directory -d 'Read the journal files in this directory (a copy, or a central journal)' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l file -d 'Read this journal file (may be given more than once)' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l unit -d 'The unit whose records are read' -r
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l alerts -d 'Only lives that were alerted'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l json -d 'Print one JSON array of lives instead of a table'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -l all-sources -d 'Read portsentinel\'s records whoever wrote them (a daemon run by hand, or any local process that wrote such fields itself)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand history" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand check-config" -s c -l config -d 'The file to check, as every other command takes it' -r -F
complete -c portsentinel -n "__fish_portsentinel_using_subcommand check-config" -s v -l verbose -d 'Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand check-config" -s q -l quiet -d 'Say less: -q for errors only, -qq for nothing'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand check-config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand check-config" -s V -l version -d 'Print version'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "run" -d 'Run the daemon in the foreground: watch listeners, record every change, alert'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "scan" -d 'List what listens now, with IANA status, port range, owner and verdict'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "explain" -d 'Explain a port: IANA status and service names, range, and what the policy says'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "notify-agent" -d 'Show desktop notifications for the daemon\'s alerts (run as the desktop user)'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "baseline" -d 'Print the listeners present now as [[allow]] entries: a baseline to allow'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "history" -d 'Review the journal: one line per listener life, from the daemon\'s own records'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "check-config" -d 'Validate a config file and exit'
complete -c portsentinel -n "__fish_portsentinel_using_subcommand help; and not __fish_seen_subcommand_from run scan explain notify-agent baseline history check-config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
