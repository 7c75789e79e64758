"""A markdown table printed row by row as a benchmark measures (RESULTS.md takes it as is), its rows also kept as
records for ``--json``."""
from __future__ import annotations

import json
from typing import List, Optional, Sequence


class MarkdownTable:
    def __init__(self, columns: Sequence[str]):
        self.records: List[dict] = []
        print('| ' + ' | '.join(columns) + ' |')
        print('|' + '---|' * len(columns), flush=True)

    def add(self, cells: Sequence[str], **record) -> None:
        print('| ' + ' | '.join(cells) + ' |', flush=True)
        self.records.append(record)

    def write_json(self, path: Optional[str]) -> None:
        if path:
            with open(path, 'w') as f:
                json.dump(self.records, f, indent=2)
