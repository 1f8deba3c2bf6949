"""Configuration: opendkim.conf and OpenDKIM data sets, read the way OpenDKIM 2.11 reads them.

    config = load_config("/etc/opendkim.conf")     # raises ConfigError(problems)
    report = analyze_config(path)                  # never raises: .config, .problems, .raw

Modules: `reader` (the file format -> RawConfig), `options` (every option name, type,
default, and whether dkimd implements it), `datasets` (file:, refile:, csl:), `hosts`
(InternalHosts/ExternalIgnoreList/PeerList matching), `keytable` (KeyTable, SigningTable),
`values` (the typed Config, its enums and value types), `load` (settings -> Config,
with every problem found), `problems` (Problem, ConfigError). The Socket value is
`dkimd.sockets.SocketSpec`, re-exported here as the type of `Config.socket`.
"""

from dkimd.config.datasets import Dataset, DatasetEntry, DatasetKind, open_dataset
from dkimd.config.hosts import HostList
from dkimd.config.keytable import KeyTable, KeyTableEntry, SigningMatch, SigningTable
from dkimd.config.load import (
    ConfigReport,
    analyze_config,
    analyze_config_text,
    build_config,
    load_config,
    parse_config_text,
)
from dkimd.config.options import OPTIONS, OptionSpec, OptionType
from dkimd.config.problems import ConfigError, Problem, Severity
from dkimd.config.reader import RawConfig, Setting, read_config_file, read_config_text
from dkimd.config.values import (
    DEFAULT_ACTIONS,
    Action,
    Canonicalization,
    Condition,
    Config,
    HeaderList,
    KeyAction,
    KeySource,
    MacroRequirement,
    Mode,
    RestartRate,
    SingleKey,
    SocketSpec,
    UserGroup,
)

__all__ = [
    "DEFAULT_ACTIONS",
    "OPTIONS",
    "Action",
    "Canonicalization",
    "Condition",
    "Config",
    "ConfigError",
    "ConfigReport",
    "Dataset",
    "DatasetEntry",
    "DatasetKind",
    "HeaderList",
    "HostList",
    "KeyAction",
    "KeySource",
    "KeyTable",
    "KeyTableEntry",
    "MacroRequirement",
    "Mode",
    "OptionSpec",
    "OptionType",
    "Problem",
    "RawConfig",
    "RestartRate",
    "Setting",
    "Severity",
    "SigningMatch",
    "SigningTable",
    "SingleKey",
    "SocketSpec",
    "UserGroup",
    "analyze_config",
    "analyze_config_text",
    "build_config",
    "load_config",
    "open_dataset",
    "parse_config_text",
    "read_config_file",
    "read_config_text",
]
