"""The time features against Python's own UTC calendar (``datetime``)."""

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade import features as F


@settings(max_examples=300, deadline=None)
@given(seconds=st.integers(0, 2**35), millis=st.integers(0, 999))
def test_time_parts_are_the_utc_weekday_hour_and_minute(seconds, millis):
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    want = {"weekday": when.weekday(), "hour": when.hour, "minute": when.minute}
    assert F.time_parts(seconds) == want
    assert F.time_parts(seconds * 1000 + millis, 1000) == want  # RecFlow's request_timestamp is in ms


def test_a_row_gives_the_request_or_the_upload_features():
    row = {"request_timestamp": 1_705_781_700_123, "upload_timestamp": 1_704_067_200}  # Sat 20:15; Mon 00:00
    assert F.time_features(row, "request") == {"request_weekday": 5, "request_hour": 20, "request_minute": 15}
    assert F.time_features(row, "upload") == {"upload_weekday": 0, "upload_hour": 0, "upload_minute": 0}
    assert set(F.TIME_FEATURES) <= set(F.USER_FEATURES + F.ITEM_FEATURES)
