#!/usr/bin/env bash
# Loads the bundled nycflights13 samples into PostgreSQL and/or MariaDB as "source systems"
# for the database jobs (jobs/flights_from_postgres.toml, ...).
#
#   bash samples/databases/load.sh            # both
#   bash samples/databases/load.sh postgres   # PostgreSQL only
#   bash samples/databases/load.sh mariadb    # MariaDB only
#
# PostgreSQL: schema `nycflights13` in database $PGDATABASE (default `test`) on
# $PGHOST:$PGPORT (default 127.0.0.1:5432) as $PGUSER (default `postgres`).
# MariaDB: database $MYSQL_DATABASE (default `nycflights13`) on 127.0.0.1:3306 as root.
#
# Every table gets the nycflights13 columns; `flights` also gets `id` (a primary key) and
# `updated_at` (when the row last changed; here its scheduled hour, `time_hour`), the cursor of
# the incremental jobs. Re-running replaces the tables.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/../nycflights13"
which="${1:-all}"

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}" PGDATABASE="${PGDATABASE:-test}"
MYSQL_DATABASE="${MYSQL_DATABASE:-nycflights13}"

flight_columns="year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute, time_hour"

load_postgres() {
  psql -v ON_ERROR_STOP=1 -q <<SQL
CREATE SCHEMA IF NOT EXISTS nycflights13;
DROP TABLE IF EXISTS nycflights13.flights, nycflights13.airports, nycflights13.airlines;
CREATE TABLE nycflights13.airlines (carrier text PRIMARY KEY, name text NOT NULL);
CREATE TABLE nycflights13.airports (
  faa text PRIMARY KEY, name text, lat numeric(9,6), lon numeric(9,6), alt integer,
  tz integer, dst text, tzone text
);
CREATE TABLE nycflights13.flights (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  year integer NOT NULL, month integer NOT NULL, day integer NOT NULL,
  dep_time integer, sched_dep_time integer, dep_delay integer,
  arr_time integer, sched_arr_time integer, arr_delay integer,
  carrier text NOT NULL, flight integer NOT NULL, tailnum text, origin text NOT NULL, dest text NOT NULL,
  air_time integer, distance integer, hour integer, minute integer,
  time_hour timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
\copy nycflights13.airlines FROM PROGRAM 'zcat "$data/airlines.csv.gz"' (FORMAT csv, HEADER true)
\copy nycflights13.airports FROM PROGRAM 'zcat "$data/airports.csv.gz"' (FORMAT csv, HEADER true, NULL '\N')
UPDATE nycflights13.airports SET tzone = NULLIF(NULLIF(tzone, 'NA'), '\N'), dst = NULLIF(dst, 'NA');
CREATE TEMPORARY TABLE flights_csv (LIKE nycflights13.flights);
ALTER TABLE flights_csv DROP COLUMN id, DROP COLUMN updated_at;
\copy flights_csv ($flight_columns) FROM PROGRAM 'zcat "$data/flights.csv.gz"' (FORMAT csv, HEADER true, NULL 'NA')
INSERT INTO nycflights13.flights ($flight_columns, updated_at)
  SELECT $flight_columns, time_hour FROM flights_csv ORDER BY time_hour, carrier, flight;
CREATE INDEX ON nycflights13.flights (updated_at);
ANALYZE nycflights13.flights;
SQL
  echo "postgres: $(psql -Atc 'SELECT count(*) FROM nycflights13.flights') flights in $PGDATABASE.nycflights13"
}

load_mariadb() {
  local tmp; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN
  for t in flights airports airlines; do zcat "$data/$t.csv.gz" > "$tmp/$t.csv"; done
  mariadb -h 127.0.0.1 -u root --local-infile=1 <<SQL
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;
USE \`$MYSQL_DATABASE\`;
DROP TABLE IF EXISTS flights, airports, airlines;
CREATE TABLE airlines (carrier varchar(8) PRIMARY KEY, name varchar(100) NOT NULL);
CREATE TABLE airports (
  faa varchar(8) PRIMARY KEY, name varchar(100), lat decimal(9,6), lon decimal(9,6), alt int,
  tz int, dst varchar(4), tzone varchar(64)
);
CREATE TABLE flights (
  id bigint AUTO_INCREMENT PRIMARY KEY,
  year int NOT NULL, month int NOT NULL, day int NOT NULL,
  dep_time int, sched_dep_time int, dep_delay int, arr_time int, sched_arr_time int, arr_delay int,
  carrier varchar(8) NOT NULL, flight int NOT NULL, tailnum varchar(8), origin varchar(8) NOT NULL,
  dest varchar(8) NOT NULL, air_time int, distance int, hour int, minute int,
  time_hour datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL,
  KEY (updated_at)
);
LOAD DATA LOCAL INFILE '$tmp/airlines.csv' INTO TABLE airlines
  FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' IGNORE 1 LINES;
LOAD DATA LOCAL INFILE '$tmp/airports.csv' INTO TABLE airports
  FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' IGNORE 1 LINES
  (faa, name, @lat, @lon, @alt, @tz, @dst, @tzone)
  SET lat = @lat, lon = @lon, alt = @alt, tz = @tz, dst = NULLIF(@dst, 'NA'),
      tzone = NULLIF(NULLIF(@tzone, 'NA'), '\\\\N');
LOAD DATA LOCAL INFILE '$tmp/flights.csv' INTO TABLE flights
  FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' IGNORE 1 LINES
  (year, month, day, @dep_time, sched_dep_time, @dep_delay, @arr_time, sched_arr_time, @arr_delay,
   carrier, flight, @tailnum, origin, dest, @air_time, distance, hour, minute, @time_hour)
  SET dep_time = NULLIF(@dep_time, 'NA'), dep_delay = NULLIF(@dep_delay, 'NA'),
      arr_time = NULLIF(@arr_time, 'NA'), arr_delay = NULLIF(@arr_delay, 'NA'),
      tailnum = NULLIF(@tailnum, 'NA'), air_time = NULLIF(@air_time, 'NA'),
      time_hour = STR_TO_DATE(@time_hour, '%Y-%m-%dT%H:%i:%sZ'),
      updated_at = STR_TO_DATE(@time_hour, '%Y-%m-%dT%H:%i:%sZ');
SQL
  echo "mariadb: $(mariadb -h 127.0.0.1 -u root -N -e "SELECT count(*) FROM \`$MYSQL_DATABASE\`.flights") flights in $MYSQL_DATABASE"
}

case "$which" in
  postgres) load_postgres ;;
  mariadb) load_mariadb ;;
  all) load_postgres; load_mariadb ;;
  *) echo "usage: $0 [postgres|mariadb|all]" >&2; exit 2 ;;
esac
